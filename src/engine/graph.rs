//! Ordering of the step graph: a stable topological sort (playbook order breaks ties) with cycle detection.

use std::collections::HashMap;

use anyhow::{bail, Result};

/// `deps[i]` lists the indices node `i` must come after. Returns indices in run order.
/// Ties keep the order the playbooks list the nodes in, so plans read top to bottom like the playbooks.
pub fn order(ids: &[String], deps: &[Vec<usize>]) -> Result<Vec<usize>> {
    let n = ids.len();
    let mut indegree = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            indegree[i] += 1;
            dependents[d].push(i);
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut out = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        out.push(i);
        for &j in &dependents[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.insert(j);
            }
        }
    }
    if out.len() < n {
        bail!("{}", describe_cycle(ids, deps, &indegree));
    }
    Ok(out)
}

/// Walk back through unresolved dependencies until a node repeats: that loop is the cycle to report.
fn describe_cycle(ids: &[String], deps: &[Vec<usize>], indegree: &[usize]) -> String {
    let start = indegree.iter().position(|&d| d > 0).unwrap_or(0);
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut path = Vec::new();
    let mut cur = start;
    while !seen.contains_key(&cur) {
        seen.insert(cur, path.len());
        path.push(cur);
        cur = deps[cur]
            .iter()
            .copied()
            .find(|&d| indegree[d] > 0)
            .unwrap_or(cur);
    }
    let mut cycle: Vec<&str> = path[seen[&cur]..]
        .iter()
        .map(|&i| ids[i].as_str())
        .collect();
    cycle.reverse();
    cycle.push(cycle[0]);
    format!(
        "the step graph has a cycle: {} (fix the `after`/`notify` lists in playbooks/)",
        cycle.join(" -> ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dependencies_come_first_and_ties_keep_listed_order() {
        // c after a; b free; d after c and b
        let order = order(
            &ids(&["a", "b", "c", "d"]),
            &[vec![], vec![], vec![0], vec![2, 1]],
        )
        .unwrap();
        assert_eq!(order, vec![0, 1, 2, 3]);
        let order2 = super::order(&ids(&["x", "y"]), &[vec![1], vec![]]).unwrap();
        assert_eq!(order2, vec![1, 0]);
    }

    #[test]
    fn a_cycle_is_reported_with_its_members() {
        let err = order(
            &ids(&["a", "b", "c", "d"]),
            &[vec![], vec![3], vec![1], vec![2]],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cycle"), "{err}");
        for id in ["b", "c", "d"] {
            assert!(err.contains(id), "{err}");
        }
        let cycle = err.split("cycle: ").nth(1).unwrap();
        assert!(
            !cycle.split(" -> ").any(|id| id == "a"),
            "a is not in the cycle: {err}"
        );
    }
}
