//! The real client against a real three-server ZooKeeper ensemble
//! (Debian's zookeeper package, which `.ci/run` installs): contending,
//! following the leader as it changes, conditional multis, and a server
//! lost without anyone noticing.

use std::sync::Arc;
use std::time::Duration;

use strata_zk::election::{Leadership, MasterInfo, Standing, connector};
use strata_zk::server::LocalEnsemble;
use strata_zk::{Detector, Op, Session, ZkError, ZkUrl};

fn info(port: u16) -> MasterInfo {
    let pid = format!("master@127.0.0.1:{port}").parse().expect("a pid");
    MasterInfo::new(&format!("m{port}"), &pid, "localhost")
}

#[tokio::test]
async fn masters_contend_in_a_real_ensemble_and_followers_track_the_leader() {
    let dir = std::env::temp_dir().join(format!("strata-zk-ensemble-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut ensemble = LocalEnsemble::start(&dir, 3).expect("a ZooKeeper ensemble");
    let url: ZkUrl = ensemble.url("/strata/test").parse().expect("its address");
    let timeout = Duration::from_secs(4);
    let connect = connector(&url, timeout);

    let first: Arc<dyn Session> = connect().await.expect("a session");
    let second: Arc<dyn Session> = connect().await.expect("a session");
    let one = Leadership::contend(first.clone(), url.path(), &info(1))
        .await
        .expect("contends");
    let two = Leadership::contend(second.clone(), url.path(), &info(2))
        .await
        .expect("contends");
    assert_eq!(one.standing().await.expect("standing").0, Standing::Leading);
    let (standing, changed) = two.standing().await.expect("standing");
    assert_eq!(standing, Standing::Following(Some(info(1))));
    let mut leader = Detector::spawn(connect.clone(), url.path());
    tokio::time::timeout(
        Duration::from_secs(30),
        leader.wait_for(|l| *l == Some(info(1))),
    )
    .await
    .expect("the detector finds the leader")
    .expect("the detector runs");

    // Conditional writes: a stale version fails the whole multi.
    let node = format!("{}/registry", url.path());
    first
        .multi(vec![Op::Create {
            path: node.clone(),
            data: b"a".to_vec(),
        }])
        .await
        .expect("created");
    let stale = first
        .multi(vec![
            Op::Set {
                path: node.clone(),
                data: b"b".to_vec(),
                version: Some(0),
            },
            Op::Set {
                path: node.clone(),
                data: b"c".to_vec(),
                version: Some(0),
            },
        ])
        .await;
    assert_eq!(stale, Err(ZkError::BadVersion));
    assert_eq!(
        first.get(&node).await.expect("read"),
        Some((b"a".to_vec(), 0))
    );

    // One server of three lost: everyone carries on (a client that was
    // connected to it loses its connection, not its session, and answers
    // again once it has reached another server).
    ensemble.kill_server(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let standing = loop {
        match one.standing().await {
            Err(ZkError::ConnectionLoss) if tokio::time::Instant::now() < deadline => {
                tokio::task::yield_now().await;
            }
            other => break other.expect("still there").0,
        }
    };
    assert_eq!(standing, Standing::Leading);

    // The leader's session ends: the other leads, and followers see it.
    drop(one);
    drop(first);
    tokio::time::timeout(Duration::from_secs(30), changed)
        .await
        .expect("the watch fires");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if two.standing().await.expect("standing").0 == Standing::Leading {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second master never led"
        );
        tokio::task::yield_now().await;
    }
    tokio::time::timeout(
        Duration::from_secs(30),
        leader.wait_for(|l| *l == Some(info(2))),
    )
    .await
    .expect("the detector follows")
    .expect("the detector runs");
    drop(ensemble);
    let _ = std::fs::remove_dir_all(&dir);
}
