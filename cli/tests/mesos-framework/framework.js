"use strict";
// A scheduler written with the mesos-framework package from npm,
// unmodified: it subscribes to the master at ADDRESS (host:port) through
// the v1 scheduler API, runs one command task and exits 0 once the task
// finished, 1 if it ended otherwise, 2 after a minute without an end.
var Scheduler = require("mesos-framework").Scheduler;
var Mesos = require("mesos-framework").Mesos.getMesos();

var master = process.argv[2].split(":");
var scheduler = new Scheduler({
    "masterUrl": master[0],
    "port": parseInt(master[1], 10),
    "frameworkName": "node-mesos-framework",
    "logging": { "level": "info" },
    "tasks": {
        "hello": {
            "priority": 1,
            "instances": 1,
            "commandInfo": new Mesos.CommandInfo(null, null, true, "echo hello from node", null, null),
            "resources": { "cpus": 0.1, "mem": 32, "ports": 0, "disk": 0 }
        }
    },
    "handlers": {}
});

scheduler.on("ready", function () { scheduler.subscribe(); });
scheduler.on("subscribed", function (subscribed) {
    console.log("SUBSCRIBED " + subscribed.frameworkId);
});
scheduler.on("error", function (error) { console.log("ERROR " + JSON.stringify(error)); });
scheduler.on("update", function (update) {
    var state = update.status.state;
    console.log("UPDATE " + update.status.task_id.value + " " + state);
    if (state === "TASK_FINISHED") {
        // Done once the library has sent the TEARDOWN.
        scheduler.on("sent_teardown", function () { process.exit(0); });
        scheduler.teardown();
    } else if (["TASK_FAILED", "TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_KILLED"].indexOf(state) >= 0) {
        process.exit(1);
    }
});
setTimeout(function () { console.log("TIMEOUT"); process.exit(2); }, 60000);
