//! The task graph: order, cycles and what is upstream of what.
//!
//! Nodes are task indices in file order; `needs[a]` lists what `a` needs
//! (edges point from a task to its upstream).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A topological order (every task after what it needs), ties broken by
/// file order; `Err` holds the tasks left out because they are on a cycle
/// or need a task that is.
pub(crate) fn order(needs: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let n = needs.len();
    let mut waiting: Vec<usize> = needs.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (task, ups) in needs.iter().enumerate() {
        for &up in ups {
            if let Some(d) = dependents.get_mut(up) {
                d.push(task);
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&t| waiting[t] == 0).map(Reverse).collect();
    let mut out = Vec::with_capacity(n);
    while let Some(Reverse(task)) = ready.pop() {
        out.push(task);
        for &d in &dependents[task] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    if out.len() == n {
        Ok(out)
    } else {
        let mut done = vec![false; n];
        for &t in &out {
            done[t] = true;
        }
        Err((0..n).filter(|&t| !done[t]).collect())
    }
}

/// Cycles among the `stuck` tasks (what [`order`] left out), each given as
/// the tasks along it starting at its first task in file order: `[a, b, c]`
/// means a needs b needs c needs a. Every task on some cycle is on at most
/// one reported cycle; time and memory are linear in the graph's size.
///
/// A stuck task needs at least one stuck task, so following stuck needs
/// from any start must come back to a task of the same walk: that loop is
/// a cycle. A walk that reaches a task an earlier walk passed stops, since
/// whatever it leads to is reported already.
pub(crate) fn cycles(needs: &[Vec<usize>], stuck: &[usize]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let mut in_stuck = vec![false; needs.len()];
    for &t in stuck {
        in_stuck[t] = true;
    }
    // The walk that first passed each task.
    let mut walk_of = vec![UNSEEN; needs.len()];
    let mut out = Vec::new();
    let mut path = Vec::new();
    for (walk, &start) in stuck.iter().enumerate() {
        path.clear();
        let mut t = start;
        while walk_of[t] == UNSEEN {
            walk_of[t] = walk;
            path.push(t);
            match needs[t].iter().find(|&&up| in_stuck[up]) {
                Some(&up) => t = up,
                None => break,
            }
        }
        if walk_of[t] != walk || path.is_empty() {
            continue;
        }
        let Some(at) = path.iter().position(|&p| p == t) else {
            continue;
        };
        let mut cycle = path[at..].to_vec();
        let first = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
        cycle.rotate_left(first);
        out.push(cycle);
    }
    out
}

/// Every task upstream of `task`, directly or not.
pub(crate) fn upstream(needs: &[Vec<usize>], task: usize) -> Vec<bool> {
    let mut seen = vec![false; needs.len()];
    let mut stack: Vec<usize> = needs.get(task).cloned().unwrap_or_default();
    while let Some(t) = stack.pop() {
        if !std::mem::replace(&mut seen[t], true) {
            stack.extend(&needs[t]);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_puts_upstream_first_and_keeps_file_order() {
        // 0 needs 2; 1 needs nothing; 2 needs 1.
        let needs = vec![vec![2], vec![], vec![1]];
        assert_eq!(order(&needs), Ok(vec![1, 2, 0]));
        let needs = vec![vec![], vec![], vec![]];
        assert_eq!(order(&needs), Ok(vec![0, 1, 2]));
    }

    #[test]
    fn cycles_are_found_once_each() {
        // 0 -> 1 -> 2 -> 0, 3 needs 0 (stuck but not on the cycle), 4 -> 4.
        let needs = vec![vec![1], vec![2], vec![0], vec![0], vec![4]];
        let stuck = order(&needs).unwrap_err();
        assert_eq!(stuck, vec![0, 1, 2, 3, 4]);
        assert_eq!(cycles(&needs, &stuck), vec![vec![0, 1, 2], vec![4]]);
    }

    #[test]
    fn a_long_cycle_is_found_in_linear_time() {
        // 0 needs 1 needs … needs n-1 needs 0, and n-1 also needs a task
        // off the cycle that needs 0.
        let n = 1_000_000;
        let mut needs: Vec<Vec<usize>> = (0..n).map(|t| vec![(t + 1) % n]).collect();
        needs[n - 1].insert(0, n);
        needs.push(vec![0]);
        let stuck = order(&needs).unwrap_err();
        let found = cycles(&needs, &stuck);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].len(), n + 1);
        assert_eq!(found[0][..3], [0, 1, 2]);
    }

    #[test]
    fn upstream_is_transitive() {
        let needs = vec![vec![], vec![0], vec![1], vec![]];
        assert_eq!(upstream(&needs, 2), vec![true, true, false, false]);
        assert_eq!(upstream(&needs, 3), vec![false; 4]);
    }
}
