//! The agent's side of the v1 executor API: calls from executors that
//! subscribed over HTTP (see [`crate::executor_api`]) become the messages
//! an executor sends over QUIC, under the identity of the executor the
//! agent started.
//!
//! Custom executors themselves (started in containers, told through
//! their environment where to register, queued tasks, timeouts, exits)
//! are the core's ([`crate::core`]).

use strata_protocol::ToAgent;
use strata_runtime::ProcessContext;

use crate::executor_api::ExecutorCall;
use crate::process::Agent;

impl Agent {
    /// Takes the next call of the v1 executor API, then waits for more.
    pub(crate) fn take_executor_calls(&mut self, ctx: &mut ProcessContext<'_, Self>) {
        let Some(api) = self.executor_api.clone() else {
            return;
        };
        ctx.spawn_future(async move { api.next().await }, |agent, ctx, call| {
            let Some(call) = call else {
                return;
            };
            agent.executor_call(ctx, call);
            agent.take_executor_calls(ctx);
        });
    }

    fn executor_call(&mut self, ctx: &mut ProcessContext<'_, Self>, call: ExecutorCall) {
        match call {
            ExecutorCall::Subscribe {
                framework_id,
                executor_id,
                events,
                answer,
            } => {
                let key = (framework_id.clone(), executor_id.clone());
                let agent = ctx.pid().clone();
                // Only an executor that has not registered (over QUIC or
                // HTTP): nobody takes over one that runs.
                let refusal = match self.core.executors.get(&key) {
                    None => Some(format!(
                        "no executor {executor_id} of framework {framework_id} was started by this agent"
                    )),
                    Some(run) if run.registered() => {
                        Some(format!("executor {executor_id} is registered already"))
                    }
                    Some(_) => None,
                };
                if let Some(reason) = refusal {
                    let _ = answer.try_send(Err(reason));
                    return;
                }
                let Some((pid, stream_id, identity)) = self.http_executors.open(
                    &agent,
                    framework_id.clone(),
                    executor_id.clone(),
                    events,
                ) else {
                    let _ = answer.try_send(Err("no stream for the executor".into()));
                    return;
                };
                if answer.try_send(Ok(stream_id)).is_err() {
                    // The client gave up waiting.
                    self.http_executors.forget(&pid);
                    return;
                }
                let message = ToAgent::RegisterExecutor {
                    framework_id,
                    executor_id,
                };
                self.message_from(ctx, pid, identity, message);
            }
            ExecutorCall::Call {
                framework_id,
                executor_id,
                stream_id,
                message,
                answer,
            } => {
                let (pid, identity) =
                    match self
                        .http_executors
                        .of(&framework_id, &executor_id, &stream_id)
                    {
                        Ok(found) => found,
                        Err(reason) => {
                            let _ = answer.try_send(Err(reason));
                            return;
                        }
                    };
                match message {
                    ToAgent::ExecutorStatus { status, .. } => {
                        let task_id = status.task_id.clone();
                        let message = ToAgent::ExecutorStatus {
                            framework_id,
                            executor_id: executor_id.clone(),
                            status,
                        };
                        let taken = self.message_from(ctx, pid, identity, message);
                        let _ = answer.try_send(if taken {
                            Ok(())
                        } else {
                            Err(format!(
                                "executor {executor_id} does not run task {task_id}"
                            ))
                        });
                    }
                    ToAgent::FrameworkMessage { data, .. } => {
                        let _ = answer.try_send(Ok(()));
                        let message = ToAgent::FrameworkMessage {
                            framework_id,
                            executor_id,
                            data,
                        };
                        self.message_from(ctx, pid, identity, message);
                    }
                    _ => {
                        let _ = answer.try_send(Err("not an executor's call".into()));
                    }
                }
            }
        }
    }
}
