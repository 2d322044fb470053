//! The order Features install in, as the Dev Containers CLI computes it: in rounds, a Feature
//! is ready once everything it `dependsOn` (hard) and every Feature of the set it
//! `installsAfter` (soft) is installed; in each round only the ready Features that
//! `overrideFeatureInstallOrder` ranks highest go, ties by id. A set where nothing is ready is a
//! cycle. Pure.

use anyhow::Result;

use crate::ui::UserError;

/// One Feature to install, as the order sees it.
#[derive(Clone, Debug)]
pub struct Node {
    /// How the Feature is named in messages and compared for ties (its reference).
    pub id: String,
    /// Its reference without tag or digest: what soft dependencies and the override name.
    pub resource: String,
    /// Its options, as canonical text: a tie-breaker after the id.
    pub options: String,
    /// Indices of the nodes it depends on (hard).
    pub depends_on: Vec<usize>,
    /// Resources it installs after, when they are in the set (soft).
    pub installs_after: Vec<String>,
}

/// The indices of `nodes` in installation order; `overrides` are resources, first installs
/// first.
pub fn install_order(nodes: &[Node], overrides: &[String]) -> Result<Vec<usize>> {
    let priority = |n: &Node| {
        overrides
            .iter()
            .position(|o| *o == n.resource)
            .map_or(0, |i| overrides.len() - i)
    };
    let mut done = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    while order.len() < nodes.len() {
        let installed = |resource: &str, done: &[bool]| {
            nodes
                .iter()
                .zip(done)
                .all(|(n, d)| n.resource != resource || *d)
        };
        let mut ready: Vec<usize> = (0..nodes.len())
            .filter(|&i| !done[i])
            .filter(|&i| nodes[i].depends_on.iter().all(|&d| done[d]))
            .filter(|&i| {
                nodes[i]
                    .installs_after
                    .iter()
                    .filter(|r| **r != nodes[i].resource)
                    .all(|r| installed(r, &done))
            })
            .collect();
        if ready.is_empty() {
            let stuck: Vec<&str> = (0..nodes.len())
                .filter(|&i| !done[i])
                .map(|i| nodes[i].id.as_str())
                .collect();
            return Err(UserError::with_hint(
                format!(
                    "the Features {} depend on each other in a cycle (dependsOn, installsAfter); none can install first",
                    stuck.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                ),
                "remove one of the dependencies, or use other versions of these Features",
            ));
        }
        let top = ready
            .iter()
            .map(|&i| priority(&nodes[i]))
            .max()
            .unwrap_or(0);
        ready.retain(|&i| priority(&nodes[i]) == top);
        ready.sort_by(|&a, &b| {
            (&nodes[a].id, &nodes[a].options).cmp(&(&nodes[b].id, &nodes[b].options))
        });
        for i in ready {
            done[i] = true;
            order.push(i);
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, hard: &[usize], soft: &[&str]) -> Node {
        Node {
            id: format!("r.io/f/{id}:1"),
            resource: format!("r.io/f/{id}"),
            options: "{}".into(),
            depends_on: hard.to_vec(),
            installs_after: soft.iter().map(|s| format!("r.io/f/{s}")).collect(),
        }
    }

    fn ids(nodes: &[Node], order: &[usize]) -> Vec<String> {
        order
            .iter()
            .map(|&i| nodes[i].resource.trim_start_matches("r.io/f/").to_string())
            .collect()
    }

    #[test]
    fn hard_then_soft_then_ids() {
        // c depends on b, b on a (recursive); z installs after c; y is free.
        let nodes = vec![
            node("z", &[], &["c"]),
            node("c", &[2], &[]),
            node("b", &[3], &[]),
            node("a", &[], &[]),
            node("y", &[], &[]),
        ];
        let order = install_order(&nodes, &[]).expect("orders");
        assert_eq!(ids(&nodes, &order), ["a", "y", "b", "c", "z"]);
    }

    #[test]
    fn a_soft_dependency_outside_the_set_is_ignored() {
        let nodes = vec![node("b", &[], &["not-here"]), node("a", &[], &["b"])];
        let order = install_order(&nodes, &[]).expect("orders");
        assert_eq!(ids(&nodes, &order), ["b", "a"]);
    }

    #[test]
    fn the_override_goes_first_among_the_ready() {
        let nodes = vec![
            node("a", &[], &[]),
            node("b", &[], &[]),
            node("c", &[1], &[]),
        ];
        let o = |s: &[&str]| s.iter().map(|s| format!("r.io/f/{s}")).collect::<Vec<_>>();
        let order = install_order(&nodes, &o(&["b"])).expect("orders");
        assert_eq!(ids(&nodes, &order), ["b", "a", "c"]);
        // A hard dependency still wins over the override.
        let order = install_order(&nodes, &o(&["c", "a"])).expect("orders");
        assert_eq!(ids(&nodes, &order), ["a", "b", "c"]);
    }

    #[test]
    fn a_cycle_is_one_error_naming_its_features() {
        let nodes = vec![
            node("a", &[1], &[]),
            node("b", &[], &["a"]),
            node("c", &[], &[]),
        ];
        let e = install_order(&nodes, &[]).expect_err("cycle").to_string();
        assert!(
            e.contains("`r.io/f/a:1`, `r.io/f/b:1`") && e.contains("cycle") && !e.contains('\n'),
            "{e}"
        );
    }
}
