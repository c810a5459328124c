//! Which worker gets how many units of which plan: a pure function, so the
//! placement rules are table-tested rather than observed.
//!
//! Rules: plans share the free slots of the cluster evenly (in submission
//! order for the remainder); each plan takes slots first from workers that
//! already run it (sticky: their prefix cache holds its grounding), then from
//! the workers with the most free slots, ties broken by worker id.

use std::collections::BTreeSet;

/// One worker's free room, as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRoom {
    pub worker: String,
    /// Units it can take now.
    pub free: usize,
    /// Indexes of the plans it holds units of.
    pub running: BTreeSet<usize>,
}

/// `count` units of plan `plan` go to worker `worker` (indexes into the inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub worker: usize,
    pub plan: usize,
    pub count: usize,
}

/// Splits the workers' free room among `plans` running plans.
pub fn assign(workers: &[WorkerRoom], plans: usize) -> Vec<Grant> {
    let total: usize = workers.iter().map(|w| w.free).sum();
    if plans == 0 || total == 0 {
        return Vec::new();
    }
    let mut free: Vec<usize> = workers.iter().map(|w| w.free).collect();
    let mut grants: Vec<Grant> = Vec::new();
    for plan in 0..plans {
        let mut share = total / plans + usize::from(plan < total % plans);
        let mut order: Vec<usize> = (0..workers.len()).collect();
        order.sort_by(|&a, &b| {
            let sticky = |w: usize| workers[w].running.contains(&plan);
            sticky(b)
                .cmp(&sticky(a))
                .then(free[b].cmp(&free[a]))
                .then(workers[a].worker.cmp(&workers[b].worker))
        });
        for worker in order {
            if share == 0 {
                break;
            }
            let count = share.min(free[worker]);
            if count > 0 {
                free[worker] -= count;
                share -= count;
                grants.push(Grant {
                    worker,
                    plan,
                    count,
                });
            }
        }
    }
    grants
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(worker: &str, free: usize, running: &[usize]) -> WorkerRoom {
        WorkerRoom {
            worker: worker.into(),
            free,
            running: running.iter().copied().collect(),
        }
    }

    fn grant(worker: usize, plan: usize, count: usize) -> Grant {
        Grant {
            worker,
            plan,
            count,
        }
    }

    #[test]
    fn assignment_table() {
        let cases: Vec<(&str, Vec<WorkerRoom>, usize, Vec<Grant>)> = vec![
            (
                "no plans, nothing to give",
                vec![room("a", 4, &[])],
                0,
                vec![],
            ),
            (
                "no room, nothing to give",
                vec![room("a", 0, &[]), room("b", 0, &[])],
                2,
                vec![],
            ),
            (
                "one plan takes every free slot",
                vec![room("a", 4, &[]), room("b", 2, &[])],
                1,
                vec![grant(0, 0, 4), grant(1, 0, 2)],
            ),
            (
                "the emptier worker first, ties by id",
                vec![room("b", 3, &[]), room("a", 3, &[]), room("c", 5, &[])],
                1,
                vec![grant(2, 0, 5), grant(1, 0, 3), grant(0, 0, 3)],
            ),
            (
                "two plans share evenly; the remainder goes to the first",
                vec![room("a", 5, &[]), room("b", 0, &[])],
                2,
                vec![grant(0, 0, 3), grant(0, 1, 2)],
            ),
            (
                "sticky: each plan stays on the worker that runs it",
                vec![room("a", 2, &[1]), room("b", 2, &[0])],
                2,
                vec![grant(1, 0, 2), grant(0, 1, 2)],
            ),
            (
                "sticky first, then spill to the others",
                vec![room("a", 1, &[0]), room("b", 4, &[])],
                1,
                vec![grant(0, 0, 1), grant(1, 0, 4)],
            ),
        ];
        for (name, workers, plans, expected) in cases {
            assert_eq!(assign(&workers, plans), expected, "{name}");
        }
    }

    #[test]
    fn never_gives_more_than_the_free_room() {
        for plans in 1..5 {
            let workers = vec![room("a", 3, &[0]), room("b", 7, &[1, 2]), room("c", 0, &[])];
            let grants = assign(&workers, plans);
            for (w, worker) in workers.iter().enumerate() {
                let given: usize = grants
                    .iter()
                    .filter(|g| g.worker == w)
                    .map(|g| g.count)
                    .sum();
                assert_eq!(given, worker.free, "plans={plans} worker={}", worker.worker);
            }
        }
    }
}
