//! Master epochs: no split brain after a master restart.
//!
//! Every master incarnation has an epoch higher than the last (kept in its
//! registry), and says it when it registers an agent or subscribes a
//! scheduler. [`MasterEpoch`] is what an agent or scheduler remembers of
//! that: it takes a registration answer unless it comes from an older
//! epoch than one already seen, and afterwards takes other messages only
//! from the master incarnation that answered (a message's sender carries
//! its node's incarnation), so a stale master's late messages are ignored.

use strata_runtime::{Incarnation, Upid};

/// Why a message was not taken as the master's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFromMaster {
    /// Another process than the master sent it.
    Stranger,
    /// An earlier master (another incarnation than the one followed)
    /// sent it.
    Earlier,
}

/// The master epoch and incarnation an agent or scheduler follows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MasterEpoch {
    current: Option<(u64, Incarnation)>,
}

impl MasterEpoch {
    /// A registration answer of `epoch` from `from`: taken (true) unless
    /// an answer of a later epoch was taken before.
    pub fn registered(&mut self, epoch: u64, from: &Upid) -> bool {
        if let Some((known, _)) = self.current
            && epoch < known
        {
            return false;
        }
        self.current = Some((epoch, from.incarnation()));
        true
    }

    /// Whether a message from `from` comes from the master followed (any
    /// master, before the first registration).
    pub fn admits(&self, from: &Upid) -> bool {
        self.current
            .is_none_or(|(_, incarnation)| incarnation == from.incarnation())
    }

    /// Whether a message from `from` is one to take from the master
    /// `master` names: it must come from that process (on any node of
    /// its), and, unless it answers a registration (which a new master
    /// may send), from the master incarnation followed. The one check of
    /// the master's messages, for agents and schedulers alike.
    pub fn check(
        &self,
        master: &Upid,
        from: &Upid,
        registration_answer: bool,
    ) -> Result<(), NotFromMaster> {
        if !from.same_name(master) {
            return Err(NotFromMaster::Stranger);
        }
        if !registration_answer && !self.admits(from) {
            return Err(NotFromMaster::Earlier);
        }
        Ok(())
    }

    /// The epoch followed, once registered.
    pub fn epoch(&self) -> Option<u64> {
        self.current.map(|(epoch, _)| epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_epochs_and_other_incarnations_are_ignored() {
        let master: Upid = "master@127.0.0.1:5050".parse().unwrap();
        let (first, second) = (
            master.with_incarnation(Incarnation(11)),
            master.with_incarnation(Incarnation(22)),
        );
        let mut followed = MasterEpoch::default();
        assert!(followed.admits(&first) && followed.admits(&second));
        assert!(followed.registered(3, &first));
        assert!(followed.admits(&first) && !followed.admits(&second));
        assert!(followed.registered(4, &second), "a restarted master");
        assert!(!followed.admits(&first), "the old one is ignored now");
        assert!(!followed.registered(3, &first), "an older epoch");
        assert_eq!(followed.epoch(), Some(4));
        assert!(followed.registered(4, &second), "the same master again");

        let stranger: Upid = "scheduler-1@127.0.0.1:5050".parse().unwrap();
        assert_eq!(
            followed.check(&master, &stranger, true),
            Err(NotFromMaster::Stranger)
        );
        assert_eq!(
            followed.check(&master, &first, false),
            Err(NotFromMaster::Earlier)
        );
        assert_eq!(followed.check(&master, &first, true), Ok(()), "an answer");
        assert_eq!(followed.check(&master, &second, false), Ok(()));
    }
}
