#!/usr/bin/env python3
"""A custom executor written with pymesos, unmodified, for Strata's executor
API test. Each task runs the shell command in its "command" label (none:
it just finishes); TASK_FINISHED when it exits 0, TASK_FAILED otherwise;
a kill ends it TASK_KILLED."""
import logging
import os
import signal
import subprocess
import sys
import threading

from pymesos import Executor, MesosExecutorDriver


class CommandExecutor(Executor):
    def __init__(self):
        self.processes = {}
        self.killed = set()
        self.lock = threading.Lock()

    # Callbacks run on pymesos' one IO thread: tasks run on their own.
    def launchTask(self, driver, task):
        threading.Thread(target=self.run, args=(driver, task), daemon=True).start()

    def killTask(self, driver, task_id):
        task = task_id["value"]
        with self.lock:
            self.killed.add(task)
            process = self.processes.get(task)
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)

    def shutdown(self, driver):
        with self.lock:
            processes = list(self.processes.values())
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)

    def update(self, driver, task, state, message=None):
        status = {"task_id": {"value": task}, "state": state}
        if message:
            status["message"] = message
        driver.sendStatusUpdate(status)

    def run(self, driver, task):
        task_id = task["task_id"]["value"]
        labels = (task.get("labels") or {}).get("labels") or []
        command = next((l["value"] for l in labels if l.get("key") == "command"), "true")
        with self.lock:
            if task_id in self.killed:
                return self.update(driver, task_id, "TASK_KILLED")
            process = subprocess.Popen(command, shell=True, start_new_session=True)
            self.processes[task_id] = process
        self.update(driver, task_id, "TASK_RUNNING", "running in pid %d" % process.pid)
        code = process.wait()
        if task_id in self.killed:
            self.update(driver, task_id, "TASK_KILLED")
        elif code == 0:
            self.update(driver, task_id, "TASK_FINISHED")
        else:
            self.update(driver, task_id, "TASK_FAILED", "exit code %d" % code)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    MesosExecutorDriver(CommandExecutor(), use_addict=True).run()
