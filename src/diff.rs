//! Add/remove changes between the members a group committed before and the
//! members it commits now (spec §6).

use rayon::prelude::*;
use roaring::RoaringBitmap;
use std::collections::HashSet;

/// How one group's members changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupChange {
    /// The group's key.
    pub key: String,
    /// Users in the group now but not before.
    pub added: RoaringBitmap,
    /// Users in the group before but not now.
    pub removed: RoaringBitmap,
}

impl GroupChange {
    /// The change from `before` to `after`. A group that is new has an empty
    /// `before`; a group that is gone has an empty `after`.
    pub fn between(key: &str, before: &RoaringBitmap, after: &RoaringBitmap) -> GroupChange {
        GroupChange {
            key: key.to_string(),
            added: after - before,
            removed: before - after,
        }
    }

    /// No change to group `key`.
    pub fn none(key: &str) -> GroupChange {
        GroupChange {
            key: key.to_string(),
            added: RoaringBitmap::new(),
            removed: RoaringBitmap::new(),
        }
    }

    /// How many members were added and removed.
    pub fn count(&self) -> ChangeCount {
        ChangeCount {
            key: self.key.clone(),
            added: self.added.len(),
            removed: self.removed.len(),
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }

    /// The changed user ids in ascending order, each with `true` for added.
    pub fn rows(&self) -> impl Iterator<Item = (u32, bool)> + '_ {
        let mut added = self.added.iter().peekable();
        let mut removed = self.removed.iter().peekable();
        std::iter::from_fn(move || match (added.peek(), removed.peek()) {
            (Some(&a), Some(&r)) if a < r => added.next().map(|id| (id, true)),
            (Some(_), Some(_)) | (None, Some(_)) => removed.next().map(|id| (id, false)),
            (Some(_), None) => added.next().map(|id| (id, true)),
            (None, None) => None,
        })
    }
}

/// How many members one group gained and lost: what a run reports and
/// guards when it does not write the changes out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeCount {
    /// The group's key.
    pub key: String,
    /// Users added.
    pub added: u64,
    /// Users removed.
    pub removed: u64,
}

impl ChangeCount {
    /// How many members `after` adds to `before` and removes from it,
    /// counted without building the changes: a group's first run would
    /// otherwise copy all its members just to count them.
    pub fn between(key: &str, before: &RoaringBitmap, after: &RoaringBitmap) -> ChangeCount {
        let kept = before.intersection_len(after);
        ChangeCount {
            key: key.to_string(),
            added: after.len() - kept,
            removed: before.len() - kept,
        }
    }

    /// No change to group `key`.
    pub fn none(key: &str) -> ChangeCount {
        ChangeCount {
            key: key.to_string(),
            added: 0,
            removed: 0,
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added == 0 && self.removed == 0
    }
}

/// The changes from the groups of one run to those of the next, in key
/// order. `before` lists the keys the earlier run committed and fetches
/// their members on demand, a few at a time in parallel, so the earlier
/// run is never held whole; `after` holds every group the later run commits.
pub fn changes<E: Send>(
    before: &[String],
    before_members: impl Fn(&str) -> Result<RoaringBitmap, E> + Sync,
    after: &[(&str, &RoaringBitmap)],
) -> Result<Vec<GroupChange>, E> {
    let empty = RoaringBitmap::new();
    let before_keys: HashSet<&str> = before.iter().map(String::as_str).collect();
    let after_keys: HashSet<&str> = after.iter().map(|(k, _)| *k).collect();
    let kept_or_new = after.par_iter().map(|(key, members)| {
        let previous = if before_keys.contains(key) {
            before_members(key)?
        } else {
            RoaringBitmap::new()
        };
        Ok(GroupChange::between(key, &previous, members))
    });
    let gone = before
        .par_iter()
        .filter(|key| !after_keys.contains(key.as_str()))
        .map(|key| Ok(GroupChange::between(key, &before_members(key)?, &empty)));
    let mut out: Vec<GroupChange> = kept_or_new.chain(gone).collect::<Result<_, E>>()?;
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Stops a run that removes more members than a day's churn would: what a
/// broken export (an emptied column, a truncated file) looks like. Routine
/// churn passes: small groups empty every day at thousands of groups, so a
/// group trips only from `min` removals up, whatever its share.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RemovalGuard {
    /// The share of a group's members (0 to 1) a run may remove.
    pub share: f64,
    /// Removals below this many never trip the guard, of a group or of the
    /// whole run, whatever the share.
    pub min: u64,
    /// The share of all the members the last run committed (0 to 1) that
    /// one run may remove, over every group together.
    pub run_share: f64,
}

impl Default for RemovalGuard {
    /// 10% of a group and at least 100 members; 20% of all memberships.
    /// A day of churn (leavers, movers, time-relative rules moving by a day)
    /// removes a few percent; a truncated file or an emptied column the
    /// rules use removes far more, from big groups or from the whole run.
    fn default() -> RemovalGuard {
        RemovalGuard {
            share: 0.10,
            min: 100,
            run_share: 0.20,
        }
    }
}

/// A group whose removals tripped the guard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MassRemoval {
    /// The group's key.
    pub key: String,
    /// Members committed before.
    pub before: u64,
    /// Members this run would remove.
    pub removed: u64,
    /// Members left after the run.
    pub after: u64,
}

/// Removals over the whole run that tripped the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunRemoval {
    /// Members committed before, over the groups the guard watched.
    pub before: u64,
    /// Members this run would remove from them.
    pub removed: u64,
}

/// What tripped the guard: groups one by one, and the run as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardTrips {
    /// Groups that would lose too many members.
    pub groups: Vec<MassRemoval>,
    /// The run, when it would remove too many members in all.
    pub run: Option<RunRemoval>,
}

impl GuardTrips {
    /// Whether nothing tripped.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.run.is_none()
    }
}

impl RemovalGuard {
    /// What among `changes` trips the guard. `before` gives each group's
    /// committed member count. Only groups for which `watched` holds count:
    /// groups gone from the rules or now drafts are removed on purpose, and
    /// groups an operator allowed pass too.
    pub fn check(
        &self,
        changes: &[ChangeCount],
        before: impl Fn(&str) -> u64,
        watched: impl Fn(&str) -> bool,
    ) -> GuardTrips {
        let trips = |removed: u64, count: u64| removed >= self.min && removed as f64 > self.share * count as f64;
        let watched: Vec<&ChangeCount> = changes.iter().filter(|c| watched(&c.key)).collect();
        let groups = watched
            .iter()
            .filter(|c| c.removed > 0)
            .filter_map(|c| {
                let count = before(&c.key);
                trips(c.removed, count).then(|| MassRemoval {
                    key: c.key.clone(),
                    before: count,
                    removed: c.removed,
                    after: count + c.added - c.removed,
                })
            })
            .collect();
        let run = RunRemoval {
            before: watched.iter().map(|c| before(&c.key)).sum(),
            removed: watched.iter().map(|c| c.removed).sum(),
        };
        let run_trips = run.removed >= self.min && run.removed as f64 > self.run_share * run.before as f64;
        GuardTrips {
            groups,
            run: run_trips.then_some(run),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> RoaringBitmap {
        v.iter().copied().collect()
    }

    #[test]
    fn new_groups_add_all_and_gone_groups_remove_all() {
        let before = vec!["gone".to_string(), "kept".to_string()];
        let stored = |key: &str| -> Result<RoaringBitmap, ()> {
            Ok(match key {
                "gone" => ids(&[1, 2]),
                _ => ids(&[3, 4]),
            })
        };
        let kept = ids(&[4, 5]);
        let new = ids(&[7]);
        let out = changes(&before, stored, &[("new", &new), ("kept", &kept)]).unwrap();
        let keys: Vec<&str> = out.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["gone", "kept", "new"]);
        assert_eq!((out[0].added.len(), out[0].removed.clone()), (0, ids(&[1, 2])));
        assert_eq!((out[1].added.clone(), out[1].removed.clone()), (ids(&[5]), ids(&[3])));
        assert_eq!((out[2].added.clone(), out[2].removed.len()), (ids(&[7]), 0));
    }

    #[test]
    fn counted_changes_match_built_changes_over_every_container_kind() {
        // Sparse (array), dense (bitmap) and run containers, overlapping in
        // part, and the empty set.
        let sparse: RoaringBitmap = (0..3_000_000).step_by(97).collect();
        let dense: RoaringBitmap = (0..3_000_000).step_by(3).collect();
        let mut runs: RoaringBitmap = (1_000_000..2_500_000).collect();
        runs.optimize();
        let empty = RoaringBitmap::new();
        let sets = [&sparse, &dense, &runs, &empty];
        for before in sets {
            for after in sets {
                let built = GroupChange::between("g", before, after);
                assert_eq!(ChangeCount::between("g", before, after), built.count());
                assert_eq!(ChangeCount::between("g", before, after).is_empty(), built.is_empty());
            }
        }
    }

    #[test]
    fn the_guard_trips_on_large_shares_of_groups_and_of_the_run() {
        let range = |a: u32, b: u32| (a..b).collect::<RoaringBitmap>();
        let before = |key: &str| match key {
            "big" => 1000,
            "small" => 20,
            "quiet" => 10_000,
            _ => 500,
        };
        let changes = [
            GroupChange::between("big", &range(0, 1000), &range(0, 899)), // 101 of 1000
            GroupChange::between("fine", &range(0, 500), &range(0, 450)), // 50: under min
            GroupChange::between("small", &range(0, 20), &RoaringBitmap::new()), // emptied, under min
            GroupChange::between("gone", &range(0, 500), &RoaringBitmap::new()),
            GroupChange::between("quiet", &range(0, 10_000), &range(0, 10_000)),
        ]
        .map(|c| c.count());
        let trips = RemovalGuard::default().check(&changes, before, |k| k != "gone");
        let keys: Vec<&str> = trips.groups.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["big"]);
        let big = &trips.groups[0];
        assert_eq!((big.before, big.removed, big.after), (1000, 101, 899));
        // 171 of 11,520 watched memberships: under 20%.
        assert_eq!(trips.run, None);
        let lenient = RemovalGuard {
            share: 0.2,
            ..RemovalGuard::default()
        };
        assert!(lenient.check(&changes[..1], before, |_| true).groups.is_empty());

        // Without the quiet group, 171 of 1,520 is over 5%; the gone group
        // never counts, and nothing counts under `min` removals.
        let strict_run = RemovalGuard {
            run_share: 0.05,
            ..RemovalGuard::default()
        };
        let run = strict_run.check(&changes[..4], before, |k| k != "gone").run;
        assert_eq!(
            run,
            Some(RunRemoval {
                before: 1520,
                removed: 171
            })
        );
        let few = RemovalGuard { min: 172, ..strict_run };
        assert_eq!(few.check(&changes[..4], before, |k| k != "gone").run, None);
    }

    #[test]
    fn rows_interleave_adds_and_removes_by_user_id() {
        let change = GroupChange::between("g", &ids(&[1, 4, 9]), &ids(&[2, 4, 10, 11]));
        let rows: Vec<(u32, bool)> = change.rows().collect();
        assert_eq!(rows, [(1, false), (2, true), (9, false), (10, true), (11, true)]);
    }
}
