//! Whether a waiting request may take a free slot now: pure arithmetic over
//! the KV cells, so the rule is tested without a model. The scheduler owns
//! the llama.cpp context and the prefix cache and carries out what this
//! decides (copies a cached prefix, evicts one, or leaves the request
//! waiting).

use super::prefix_cache::common_prefix_len;

/// What the KV cache holds besides the waiting request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cells {
    /// The context's cells in all.
    pub n_ctx: usize,
    /// The most one sequence may use.
    pub per_sequence: usize,
    /// Cells the running slots have reserved.
    pub reserved: usize,
    /// Cells the prefix cache's entries hold.
    pub cached: usize,
}

/// The outcome for one waiting request with a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Admit it, reusing `reused` cached prompt tokens and reserving `need` cells.
    Admit { reused: usize, need: usize },
    /// Not enough cells: free some by evicting a cached prefix, then ask again
    /// (the eviction may take this request's match with it).
    Evict,
    /// Not enough cells and nothing cached to evict: wait for a slot to finish.
    Wait,
}

/// Decides for a request of `prompt` tokens generating up to `max_new`,
/// whose longest cached prefix is `cached_match` tokens.
pub(super) fn admission(
    prompt: usize,
    max_new: usize,
    cached_match: Option<usize>,
    cells: Cells,
) -> Admission {
    // Keep at least one prompt token to compute: it yields the logits.
    let reused = cached_match.map_or(0, |n| n.min(prompt.saturating_sub(1)));
    let need = (prompt - reused + max_new).min(cells.per_sequence);
    if cells.reserved + cells.cached + need <= cells.n_ctx {
        Admission::Admit { reused, need }
    } else if cells.cached > 0 {
        Admission::Evict
    } else {
        Admission::Wait
    }
}

/// Whether a request that reuses prefixes should wait for one a slot is
/// computing right now (it is cached once that slot's prefill ends) rather
/// than compute the same tokens again. `prefilling` are the prompts of the
/// slots in prefill that reuse prefixes; `already_cached` is the request's
/// longest cached match; shorter shares than `min_tokens` are never cached.
pub(super) fn waits_for_prefix<'a>(
    prompt: &[i32],
    prefilling: impl IntoIterator<Item = &'a [i32]>,
    already_cached: usize,
    min_tokens: usize,
) -> bool {
    prefilling.into_iter().any(|other| {
        let shared = common_prefix_len(other, prompt);
        shared >= min_tokens && shared > already_cached
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: Cells = Cells {
        n_ctx: 4096,
        per_sequence: 1024,
        reserved: 0,
        cached: 0,
    };

    #[test]
    fn admission_table() {
        let cases = [
            // (case, prompt, max_new, cached match, cells, expected)
            (
                "empty context",
                100,
                50,
                None,
                ROOMY,
                Admission::Admit {
                    reused: 0,
                    need: 150,
                },
            ),
            (
                "a cached prefix is reused and not reserved again",
                100,
                50,
                Some(80),
                ROOMY,
                Admission::Admit {
                    reused: 80,
                    need: 70,
                },
            ),
            (
                "a whole-prompt match leaves one token to compute",
                100,
                50,
                Some(100),
                ROOMY,
                Admission::Admit {
                    reused: 99,
                    need: 51,
                },
            ),
            (
                "the reservation is capped at one sequence's share",
                900,
                512,
                None,
                ROOMY,
                Admission::Admit {
                    reused: 0,
                    need: 1024,
                },
            ),
            (
                "exactly full fits",
                100,
                50,
                None,
                Cells {
                    reserved: 3946,
                    ..ROOMY
                },
                Admission::Admit {
                    reused: 0,
                    need: 150,
                },
            ),
            (
                "one cell short, cached prefixes to evict",
                100,
                50,
                None,
                Cells {
                    reserved: 3900,
                    cached: 47,
                    ..ROOMY
                },
                Admission::Evict,
            ),
            (
                "one cell short, nothing cached",
                100,
                50,
                None,
                Cells {
                    reserved: 3947,
                    ..ROOMY
                },
                Admission::Wait,
            ),
            (
                "a reused prefix makes it fit where a fresh prompt would not",
                100,
                50,
                Some(60),
                Cells {
                    reserved: 3900,
                    cached: 100,
                    ..ROOMY
                },
                Admission::Admit {
                    reused: 60,
                    need: 90,
                },
            ),
        ];
        for (case, prompt, max_new, cached, cells, expected) in cases {
            assert_eq!(
                admission(prompt, max_new, cached, cells),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn a_request_waits_only_for_a_longer_shared_prefix_worth_caching() {
        let prompt: Vec<i32> = (0..100).collect();
        let sharing_60: Vec<i32> = (0..60).chain(500..540).collect();
        let sharing_10: Vec<i32> = (0..10).chain(500..590).collect();
        let cases: [(&str, Vec<&[i32]>, usize, bool); 5] = [
            ("nothing in prefill", vec![], 0, false),
            (
                "a slot computing a 60-token shared prefix",
                vec![&sharing_60],
                0,
                true,
            ),
            ("the share is cached already", vec![&sharing_60], 60, false),
            (
                "a longer share than the cached one",
                vec![&sharing_60],
                40,
                true,
            ),
            (
                "a share too short to be cached",
                vec![&sharing_10],
                0,
                false,
            ),
        ];
        for (case, prefilling, cached, expected) in cases {
            assert_eq!(
                waits_for_prefix(&prompt, prefilling, cached, 32),
                expected,
                "{case}"
            );
        }
    }
}
