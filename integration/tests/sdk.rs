//! The scheduler SDK over the real runtime: a scheduler written as a type
//! with callbacks runs tasks to completion and stops.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::rc::Rc;

use strata_agent::Runner;
use strata_frameworks::scheduler::{self, Scheduler, SchedulerConfig, SchedulerDriver};
use strata_integration::cluster::{fast_master, node, r, start_agent, start_master, task};
use strata_protocol::{FrameworkId, FrameworkInfo, Offer, TaskState, TaskStatus};
use strata_runtime::CertificateAuthority;

/// What the test reads back.
#[derive(Debug, Default)]
struct Record {
    registered: Vec<FrameworkId>,
    finished: usize,
}

/// Launches `total` short tasks as offers allow, then stops.
struct Batch {
    total: usize,
    launched: usize,
    record: Rc<RefCell<Record>>,
}

impl Scheduler for Batch {
    fn registered(&mut self, _: &mut SchedulerDriver<'_, '_, Self>, framework_id: &FrameworkId) {
        self.record
            .borrow_mut()
            .registered
            .push(framework_id.clone());
    }

    fn resource_offers(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, offers: Vec<Offer>) {
        let need = r("cpus:0.5;mem:64");
        for offer in offers {
            let mut left = offer.resources.clone();
            let mut tasks = Vec::new();
            while self.launched < self.total {
                let Some(rest) = left.checked_sub(&need) else {
                    break;
                };
                left = rest;
                self.launched += 1;
                tasks.push(task(
                    &format!("batch-{}", self.launched),
                    &offer.agent_id,
                    "cpus:0.5;mem:64",
                    50,
                ));
            }
            if tasks.is_empty() {
                driver.decline(&offer.id);
            } else {
                driver.launch(&offer.id, tasks);
            }
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver<'_, '_, Self>, status: &TaskStatus) {
        if status.state == TaskState::Finished {
            let mut record = self.record.borrow_mut();
            record.finished += 1;
            if record.finished == self.total {
                driver.stop(false);
            }
        }
    }
}

#[test]
fn a_batch_scheduler_runs_its_tasks_and_stops() {
    actix_rt::System::new().block_on(async {
        let ca = CertificateAuthority::generate("cluster").unwrap();
        let (_master_node, master) = start_master(&ca, fast_master()).await;
        // Room for two tasks at a time: the batch needs several offers.
        let _agent = start_agent(&ca, &master, "agent", "cpus:1;mem:256", Runner::InProcess).await;
        let scheduler_node = node(&ca, "scheduler").await;
        let record = Rc::new(RefCell::new(Record::default()));
        let shared = record.clone();
        let config = SchedulerConfig::new(master.clone(), FrameworkInfo::new("batch", "test"));
        let pid = scheduler::spawn(&scheduler_node, "batch", config, move || Batch {
            total: 5,
            launched: 0,
            record: shared.clone(),
        })
        .unwrap();
        let deadline = std::time::Duration::from_secs(30);
        tokio::time::timeout(deadline, scheduler::wait(&scheduler_node, &pid))
            .await
            .expect("the batch finished in time")
            .unwrap();
        let record = record.borrow();
        assert_eq!(record.registered.len(), 1);
        assert_eq!(record.finished, 5);
    });
}
