//! Data planning (design section 5.1, step 2): the plan's shares become
//! accepted-record quotas per stratum (subdomain x task type x persona x
//! language x adversarial). A pure, deterministic function of plan and seed:
//! largest-remainder rounding, so the quotas sum to the target exactly, with
//! ties broken by a seeded hash instead of list order.

use serde::Serialize;

use super::schema::Plan;

/// One cell of the plan's stratification.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Stratum {
    pub subdomain: String,
    pub task_type: String,
    pub persona: String,
    pub language: String,
    pub adversarial: bool,
}

/// How many accepted records a stratum must reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StratumQuota {
    pub stratum: Stratum,
    pub quota: u64,
}

fn normalised(weights: &[f64]) -> Vec<f64> {
    let sum: f64 = weights.iter().sum();
    weights.iter().map(|w| w / sum).collect()
}

impl Stratum {
    /// A hasher seeded with the plan seed and this stratum: the root of every
    /// deterministic choice made for it.
    pub(super) fn seeded_hasher(&self, seed: u64) -> blake3::Hasher {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&seed.to_le_bytes());
        for part in [
            &self.subdomain,
            &self.task_type,
            &self.persona,
            &self.language,
        ] {
            hasher.update(part.as_bytes());
            hasher.update(&[0]);
        }
        hasher.update(&[u8::from(self.adversarial)]);
        hasher
    }
}

fn tie_break(seed: u64, stratum: &Stratum) -> [u8; 32] {
    *stratum.seeded_hasher(seed).finalize().as_bytes()
}

/// Quotas for every stratum, sorted by stratum; they sum to the target.
/// Expects a validated plan (positive weights, shares summing to 1).
pub fn allocate(plan: &Plan) -> Vec<StratumQuota> {
    let target = plan.target.accepted.max(0) as u64;
    let subdomains = normalised(&plan.subdomains.iter().map(|s| s.weight).collect::<Vec<_>>());
    let personas = normalised(&plan.personas.iter().map(|p| p.weight).collect::<Vec<_>>());
    let adversarial_share = plan.adversarial.share.clamp(0.0, 1.0);
    let adversarial: Vec<(bool, f64)> =
        [(false, 1.0 - adversarial_share), (true, adversarial_share)]
            .into_iter()
            .filter(|(_, share)| *share > 0.0)
            .collect();

    let mut cells: Vec<(Stratum, f64)> = Vec::new();
    for (subdomain, w_sub) in plan.subdomains.iter().zip(&subdomains) {
        for task in &plan.task_types {
            for (persona, w_persona) in plan.personas.iter().zip(&personas) {
                for language in &plan.languages {
                    for &(is_adversarial, w_adv) in &adversarial {
                        let ideal =
                            target as f64 * w_sub * task.share * w_persona * language.share * w_adv;
                        cells.push((
                            Stratum {
                                subdomain: subdomain.name.clone(),
                                task_type: task.name.clone(),
                                persona: persona.name.clone(),
                                language: language.code.clone(),
                                adversarial: is_adversarial,
                            },
                            ideal,
                        ));
                    }
                }
            }
        }
    }
    let mut quotas: Vec<u64> = cells
        .iter()
        .map(|(_, ideal)| ideal.floor() as u64)
        .collect();
    let assigned: u64 = quotas.iter().sum();
    let mut by_remainder: Vec<usize> = (0..cells.len()).collect();
    by_remainder.sort_by(|&a, &b| {
        let frac = |i: usize| cells[i].1 - cells[i].1.floor();
        frac(b)
            .total_cmp(&frac(a))
            .then_with(|| tie_break(plan.seed, &cells[a].0).cmp(&tie_break(plan.seed, &cells[b].0)))
    });
    for &idx in by_remainder
        .iter()
        .take(target.saturating_sub(assigned) as usize)
    {
        quotas[idx] += 1;
    }
    let mut out: Vec<StratumQuota> = cells
        .into_iter()
        .zip(quotas)
        .map(|((stratum, _), quota)| StratumQuota { stratum, quota })
        .collect();
    out.sort_by(|a, b| a.stratum.cmp(&b.stratum));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::parse_plan;

    /// A minimal valid plan with the given subdomain weights, language shares,
    /// adversarial share, target and seed.
    fn plan(
        subdomains: &[f64],
        languages: &[(&str, f64)],
        adversarial: f64,
        target: i64,
        seed: u64,
    ) -> Plan {
        let mut text = format!(
            "version = 1\nseed = {seed}\n[domain]\nname = \"d\"\ndescription = \"d\"\n[target]\naccepted = {target}\n"
        );
        if adversarial > 0.0 {
            text += &format!("[adversarial]\nshare = {adversarial}\nkinds = [\"ambiguous\"]\n");
        }
        text +=
            "[methods]\ntemplate = 1.0\nself_instruct = 0.0\nevol_instruct = 0.0\nmagpie = 0.0\n";
        for (idx, weight) in subdomains.iter().enumerate() {
            text += &format!("[[subdomains]]\nname = \"s{idx}\"\nweight = {weight}\n");
        }
        text += "[[personas]]\nname = \"p\"\nweight = 1\n";
        for (code, share) in languages {
            text += &format!("[[languages]]\ncode = \"{code}\"\nshare = {share}\n");
        }
        text += "[[task_types]]\nname = \"qa\"\nshare = 1.0\n[task_types.templates]\n";
        for (code, _) in languages {
            text += &format!("{code} = \"Ask about {{{{ subdomain }}}}\"\n");
        }
        parse_plan("test.toml", &text, None).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn quota_of(quotas: &[StratumQuota], pred: impl Fn(&Stratum) -> bool) -> u64 {
        quotas
            .iter()
            .filter(|q| pred(&q.stratum))
            .map(|q| q.quota)
            .sum()
    }

    #[test]
    fn shares_become_quotas_that_sum_to_the_target() {
        // (subdomain weights, languages, adversarial share, target, expected quota per subdomain)
        type Case = (Vec<f64>, Vec<(&'static str, f64)>, f64, i64, Vec<u64>);
        let cases: Vec<Case> = vec![
            (vec![3.0, 1.0], vec![("en", 1.0)], 0.0, 8, vec![6, 2]),
            (
                vec![1.0, 1.0],
                vec![("en", 0.5), ("es", 0.5)],
                0.0,
                24,
                vec![12, 12],
            ),
            (
                vec![0.5, 0.3, 0.2],
                vec![("en", 1.0)],
                0.0,
                100,
                vec![50, 30, 20],
            ),
            (vec![1.0], vec![("en", 1.0)], 0.25, 8, vec![8]),
            (vec![1.0, 1.0, 1.0], vec![("en", 1.0)], 0.0, 10, vec![]), // remainder case, below
        ];
        for (weights, languages, adversarial, target, expected) in cases {
            let quotas = allocate(&plan(&weights, &languages, adversarial, target, 7));
            let total: u64 = quotas.iter().map(|q| q.quota).sum();
            assert_eq!(total, target as u64, "{weights:?}");
            for (idx, want) in expected.iter().enumerate() {
                let got = quota_of(&quotas, |s| s.subdomain == format!("s{idx}"));
                assert_eq!(got, *want, "subdomain {idx} of {weights:?}");
            }
        }
    }

    #[test]
    fn adversarial_and_language_shares_are_honoured() {
        let quotas = allocate(&plan(&[1.0], &[("en", 0.5), ("es", 0.5)], 0.25, 24, 1));
        assert_eq!(quota_of(&quotas, |s| s.adversarial), 6);
        assert_eq!(quota_of(&quotas, |s| s.language == "es"), 12);
        assert_eq!(
            quota_of(&quotas, |s| s.language == "en" && !s.adversarial),
            9
        );
    }

    #[test]
    fn remainders_go_to_seeded_strata_deterministically() {
        let equal = plan(&[1.0, 1.0, 1.0], &[("en", 1.0)], 0.0, 10, 42);
        let first = allocate(&equal);
        assert_eq!(
            first,
            allocate(&equal),
            "same plan and seed, same allocation"
        );
        for q in &first {
            assert!(q.quota == 3 || q.quota == 4, "{q:?}");
        }
        let winners: std::collections::HashSet<String> = (0..20)
            .map(|seed| {
                let quotas = allocate(&plan(&[1.0, 1.0, 1.0], &[("en", 1.0)], 0.0, 10, seed));
                quotas
                    .into_iter()
                    .find(|q| q.quota == 4)
                    .unwrap()
                    .stratum
                    .subdomain
            })
            .collect();
        assert!(
            winners.len() > 1,
            "the seed, not list order, breaks ties: {winners:?}"
        );
    }
}
