//! The task graph: order, cycles and what is upstream of what.
//!
//! Nodes are task indices in file order; `needs[a]` lists what `a` needs
//! (edges point from a task to its upstream).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

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

/// One cycle per group of tasks stuck on cycles, each starting at its
/// first task in file order: `[a, b, c]` means a needs b needs c needs a.
pub(crate) fn cycles(needs: &[Vec<usize>], stuck: &[usize]) -> Vec<Vec<usize>> {
    let mut in_stuck = vec![false; needs.len()];
    for &t in stuck {
        in_stuck[t] = true;
    }
    let mut reported = vec![false; needs.len()];
    let mut out = Vec::new();
    for &start in stuck {
        if reported[start] {
            continue;
        }
        if let Some(cycle) = shortest_cycle(needs, &in_stuck, start) {
            for &t in &cycle {
                reported[t] = true;
            }
            out.push(cycle);
        }
    }
    out
}

/// The shortest path from `start` back to itself, within `allowed`.
fn shortest_cycle(needs: &[Vec<usize>], allowed: &[bool], start: usize) -> Option<Vec<usize>> {
    let mut parent: Vec<Option<usize>> = vec![None; needs.len()];
    let mut queue = VecDeque::from([start]);
    let mut seen = vec![false; needs.len()];
    while let Some(t) = queue.pop_front() {
        for &up in &needs[t] {
            if up == start {
                let mut path = vec![t];
                let mut cur = t;
                while let Some(p) = parent[cur] {
                    path.push(p);
                    cur = p;
                }
                path.reverse();
                return Some(path);
            }
            if allowed.get(up).copied().unwrap_or(false) && !seen[up] {
                seen[up] = true;
                parent[up] = Some(t);
                queue.push_back(up);
            }
        }
    }
    None
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
    fn upstream_is_transitive() {
        let needs = vec![vec![], vec![0], vec![1], vec![]];
        assert_eq!(upstream(&needs, 2), vec![true, true, false, false]);
        assert_eq!(upstream(&needs, 3), vec![false; 4]);
    }
}
