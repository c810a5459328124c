//! Bookkeeping for shared-prompt-prefix reuse: which token prefixes have
//! their KV cells kept under which cache sequence id, and which to evict.
//! Pure: the scheduler carries out the copies and removals in llama.cpp.

/// One kept prefix: its tokens live in the KV cache under `seq_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    seq_id: i32,
    tokens: Vec<i32>,
    last_used: u64,
}

/// The best cached prefix for a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixMatch {
    pub seq_id: i32,
    /// Leading prompt tokens that the entry holds.
    pub n_tokens: usize,
    /// The entry's own length: a match shorter than it is partial.
    pub entry_len: usize,
}

/// LRU set of cached prefixes under a cell budget.
#[derive(Debug)]
pub struct PrefixCache {
    entries: Vec<Entry>,
    free_seq_ids: Vec<i32>,
    budget_cells: usize,
    /// Shorter common prefixes are not worth a cache entry.
    min_tokens: usize,
    clock: u64,
}

impl PrefixCache {
    /// `seq_ids` are the llama.cpp sequence ids reserved for cache entries.
    pub fn new(
        seq_ids: impl IntoIterator<Item = i32>,
        budget_cells: usize,
        min_tokens: usize,
    ) -> Self {
        let mut free_seq_ids: Vec<i32> = seq_ids.into_iter().collect();
        free_seq_ids.reverse();
        Self {
            entries: Vec::new(),
            free_seq_ids,
            budget_cells,
            min_tokens: min_tokens.max(1),
            clock: 0,
        }
    }

    pub fn min_tokens(&self) -> usize {
        self.min_tokens
    }

    /// KV cells the entries may hold (an upper bound: entries can share cells).
    pub fn cells(&self) -> usize {
        self.entries.iter().map(|e| e.tokens.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry sharing the longest prefix with `tokens` (at least
    /// `min_tokens`); among equal matches the shortest entry, the cheapest to keep.
    /// Marks it used.
    pub fn lookup(&mut self, tokens: &[i32]) -> Option<PrefixMatch> {
        let found = self.best_match(tokens)?;
        self.clock += 1;
        if let Some(entry) = self.entries.iter_mut().find(|e| e.seq_id == found.seq_id) {
            entry.last_used = self.clock;
        }
        Some(found)
    }

    /// Length of the longest usable cached prefix of `tokens`, without
    /// marking anything used.
    pub fn peek_best(&self, tokens: &[i32]) -> Option<usize> {
        self.best_match(tokens).map(|m| m.n_tokens)
    }

    fn best_match(&self, tokens: &[i32]) -> Option<PrefixMatch> {
        self.entries
            .iter()
            .map(|entry| (common_prefix_len(&entry.tokens, tokens), entry))
            .filter(|(n, _)| *n >= self.min_tokens)
            .max_by(|(n_a, a), (n_b, b)| n_a.cmp(n_b).then(b.tokens.len().cmp(&a.tokens.len())))
            .map(|(n_tokens, entry)| PrefixMatch {
                seq_id: entry.seq_id,
                n_tokens,
                entry_len: entry.tokens.len(),
            })
    }

    /// Whether keeping `tokens` is worthwhile: long enough and not held already.
    pub fn wants(&self, tokens: &[i32]) -> bool {
        tokens.len() >= self.min_tokens
            && tokens.len() <= self.budget_cells
            && !self.entries.iter().any(|e| e.tokens == tokens)
    }

    /// Reserves a sequence id for `tokens`, evicting least-recently-used
    /// entries to stay within the budget and the id pool. Returns the id to
    /// copy the cells into and the ids whose cells must be removed.
    pub fn insert(&mut self, tokens: &[i32]) -> Option<(i32, Vec<i32>)> {
        if !self.wants(tokens) {
            return None;
        }
        let mut evicted = Vec::new();
        while self.free_seq_ids.is_empty() || self.cells() + tokens.len() > self.budget_cells {
            evicted.push(self.evict_lru()?);
        }
        let seq_id = self.free_seq_ids.pop()?;
        self.clock += 1;
        self.entries.push(Entry {
            seq_id,
            tokens: tokens.to_vec(),
            last_used: self.clock,
        });
        Some((seq_id, evicted))
    }

    /// Drops the least recently used entry, returning its sequence id.
    pub fn evict_lru(&mut self) -> Option<i32> {
        let idx = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.last_used)
            .map(|(idx, _)| idx)?;
        let entry = self.entries.swap_remove(idx);
        self.free_seq_ids.push(entry.seq_id);
        Some(entry.seq_id)
    }
}

/// How many leading tokens of a just-computed prompt of `len` tokens to keep,
/// given the `reused` tokens it matched in the cache and the `shared` tokens
/// its request said later ones share (0: none said):
/// - a said opening longer than the match, since later requests start so;
/// - else the part it shared with a longer entry (a system prompt common to
///   all of a kind), found by the match itself;
/// - else, the first of its kind, the whole prompt, for the next one to match.
pub fn prefix_to_keep(
    len: usize,
    reused: usize,
    shared: usize,
    min_tokens: usize,
) -> Option<usize> {
    if shared >= min_tokens && shared > reused && shared <= len {
        Some(shared)
    } else if reused >= min_tokens {
        Some(reused)
    } else if shared > 0 && shared < min_tokens {
        None // an opening too short to keep, and the rest is the instance's own
    } else {
        Some(len)
    }
}

/// Number of leading elements two slices share.
pub fn common_prefix_len(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(range: std::ops::Range<i32>) -> Vec<i32> {
        range.collect()
    }

    #[test]
    fn common_prefix_table() {
        let cases: &[(&[i32], &[i32], usize)] = &[
            (&[], &[], 0),
            (&[1, 2, 3], &[1, 2, 3], 3),
            (&[1, 2, 3], &[1, 2], 2),
            (&[1, 2, 3], &[9, 2, 3], 0),
            (&[1, 2, 3, 4], &[1, 2, 5, 4], 2),
        ];
        for (a, b, want) in cases {
            assert_eq!(common_prefix_len(a, b), *want, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn short_prefixes_are_not_kept_or_matched() {
        let mut cache = PrefixCache::new(10..12, 1000, 8);
        assert!(cache.insert(&seq(0..5)).is_none());
        cache.insert(&seq(0..20)).unwrap();
        // shares only 4 tokens
        assert_eq!(cache.lookup(&[0, 1, 2, 3, 99, 100, 101, 102]), None);
    }

    #[test]
    fn lookup_prefers_longest_then_shortest_entry() {
        let mut cache = PrefixCache::new(10..14, 1000, 4);
        let (long_id, _) = cache.insert(&seq(0..50)).unwrap();
        let mut prompt = seq(0..30);
        prompt.push(999);
        let hit = cache.lookup(&prompt).unwrap();
        assert_eq!((hit.seq_id, hit.n_tokens, hit.entry_len), (long_id, 30, 50));
        // the common part becomes its own, cheaper entry and wins ties
        let (short_id, _) = cache.insert(&seq(0..30)).unwrap();
        let hit = cache.lookup(&prompt).unwrap();
        assert_eq!(
            (hit.seq_id, hit.n_tokens, hit.entry_len),
            (short_id, 30, 30)
        );
    }

    #[test]
    fn a_said_opening_is_kept_over_what_the_cache_found() {
        // (prompt length, reused, said shared, min tokens) -> tokens kept
        type Case = ((usize, usize, usize, usize), Option<usize>, &'static str);
        let cases: &[Case] = &[
            ((300, 0, 0, 32), Some(300), "the first of its kind, whole"),
            (
                (300, 60, 0, 32),
                Some(60),
                "the part it shared with an entry",
            ),
            (
                (300, 60, 190, 32),
                Some(190),
                "its said opening, longer than the match",
            ),
            (
                (300, 0, 190, 32),
                Some(190),
                "its said opening, not the instance",
            ),
            (
                (300, 250, 190, 32),
                Some(250),
                "a match longer than the opening",
            ),
            ((300, 0, 10, 32), None, "an opening too short to keep"),
            (
                (300, 0, 400, 32),
                Some(300),
                "an opening past the prompt is not believed",
            ),
        ];
        for ((len, reused, shared, min), want, what) in cases {
            assert_eq!(
                prefix_to_keep(*len, *reused, *shared, *min),
                *want,
                "{what}"
            );
        }
    }

    #[test]
    fn duplicate_entries_are_refused() {
        let mut cache = PrefixCache::new(10..14, 1000, 4);
        cache.insert(&seq(0..10)).unwrap();
        assert!(cache.insert(&seq(0..10)).is_none());
        assert_eq!(cache.cells(), 10);
    }

    #[test]
    fn budget_evicts_least_recently_used() {
        let mut cache = PrefixCache::new(10..20, 100, 4);
        let (a, _) = cache.insert(&seq(0..40)).unwrap();
        let (b, _) = cache.insert(&seq(100..140)).unwrap();
        cache.lookup(&seq(0..40)).unwrap(); // a is now more recent than b
        let (c, evicted) = cache.insert(&seq(200..240)).unwrap();
        assert_eq!(evicted, vec![b]);
        assert!(cache.cells() <= 100);
        assert_eq!(c, b, "the freed sequence id is reused");
        assert!(cache.lookup(&seq(0..40)).is_some_and(|m| m.seq_id == a));
    }

    #[test]
    fn id_pool_exhaustion_evicts() {
        let mut cache = PrefixCache::new(10..12, 10_000, 4);
        cache.insert(&seq(0..10)).unwrap();
        cache.insert(&seq(100..110)).unwrap();
        let (_, evicted) = cache.insert(&seq(200..210)).unwrap();
        assert_eq!(evicted.len(), 1);
        assert_eq!(cache.cells(), 20);
    }

    #[test]
    fn entry_larger_than_budget_is_not_kept() {
        let mut cache = PrefixCache::new(10..12, 16, 4);
        assert!(cache.insert(&seq(0..17)).is_none());
        assert!(cache.is_empty());
    }
}
