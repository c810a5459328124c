//! The three duplicate tiers on a fixture with injected copies, near copies
//! and rewordings, the semantic tier fed by the real model's embeddings.

use seedling_common::embedding::Embedding;
use seedling_coordinator::plan::Quality;
use seedling_coordinator::quality::duplicates::{Candidate, DuplicateTiers};
use seedling_tests::engine;

/// Distinct questions of one domain: none may be taken for another's duplicate.
const DISTINCT: &[&str] = &[
    "How do I open a new savings account?",
    "What fees apply when I send money abroad?",
    "My debit card was stolen, what should I do?",
    "How long does a cheque take to clear?",
    "Can I raise the daily ATM withdrawal limit on my card?",
    "What is the APY on your high-yield savings account?",
    "How do I dispute a charge on my credit card?",
    "Why was my mortgage application declined?",
    "What documents do I need to open a business account?",
    "How does overdraft protection work?",
    "Can I set up automatic bill payments online?",
    "What is the minimum balance for a checking account?",
    "How do I add a joint owner to my account?",
    "What happens if I miss a loan payment?",
    "How can I order new cheques?",
    "Is my deposit insured, and up to what amount?",
    "Why is there a pending hold on my account?",
    "How do I change the address on my account?",
    "Can I get a refund for a foreign transaction fee?",
    "What is the interest rate on a personal loan?",
    "How do I reset my online banking password?",
    "Can I deposit a check with the mobile app?",
    "What is the exchange rate for euros today?",
    "How do I report a lost credit card while travelling?",
    "When is my monthly statement available?",
    "How do I close my savings account?",
    "Can I transfer money to a friend instantly?",
    "What does a credit score affect when applying for a mortgage?",
    "How do I set up a travel notice on my card?",
    "Why was my card declined at the grocery store?",
    "How can I see my transaction history for last year?",
    "I run a small bakery and the card terminal charged my customers twice for the same purchase yesterday evening, how do I get the duplicate charges reversed?",
];

/// (injected text, tier expected to catch it, index of its survivor in DISTINCT)
const INJECTED: &[(&str, &str, usize)] = &[
    ("how do i open a NEW savings account", "exact_duplicate", 0),
    (
        "Why was my mortgage application declined??",
        "exact_duplicate",
        7,
    ),
    (
        "I run a small bakery and the card terminal charged my customers twice for the same purchase yesterday evening, how do I get the duplicate charges reversed quickly?",
        "near_duplicate",
        31,
    ),
    (
        "How can I open a new savings account?",
        "semantic_duplicate",
        0,
    ),
    (
        "Which fees apply when I send money abroad?",
        "semantic_duplicate",
        1,
    ),
    (
        "My debit card got stolen, what do I do?",
        "semantic_duplicate",
        2,
    ),
    (
        "What's the minimum balance for a checking account?",
        "semantic_duplicate",
        11,
    ),
];

#[test]
fn model_each_duplicate_kind_is_caught_by_its_tier_and_survivors_are_unique() {
    let engine = engine(1, 512);
    let texts: Vec<String> = DISTINCT
        .iter()
        .chain(INJECTED.iter().map(|(t, _, _)| t))
        .map(|t| t.to_string())
        .collect();
    let embeddings: Vec<Embedding> = engine
        .embed_blocking(texts.clone())
        .expect("the engine embeds")
        .iter()
        .map(|v| Embedding::quantise(v))
        .collect();
    let candidate = |i: usize| Candidate {
        text: &texts[i],
        language: "en",
        embedding: Some(&embeddings[i]),
        semantic: true,
    };

    // The distinct questions arrive first: every one survives.
    let defaults = Quality::default();
    let mut tiers = DuplicateTiers::new(
        defaults.near_duplicate_jaccard,
        defaults.semantic_duplicate_cosine,
    );
    let mut survivors = Vec::new();
    for (i, question) in DISTINCT.iter().enumerate() {
        if let Some(duplicate) = tiers.check(&candidate(i)) {
            panic!("distinct question {question:?} taken for a duplicate: {duplicate:?}");
        }
        let id = format!("r{i}");
        tiers.insert(&id, &candidate(i));
        survivors.push(id);
    }
    // Then the injected ones: each is caught by its own tier and names its survivor.
    let mut caught = Vec::new();
    for (k, (text, tier, of)) in INJECTED.iter().enumerate() {
        let duplicate = tiers
            .check(&candidate(DISTINCT.len() + k))
            .unwrap_or_else(|| panic!("{text:?} should be a {tier}"));
        println!("{:<20} {text:?}: {duplicate:?}", duplicate.reason());
        assert_eq!(duplicate.reason(), *tier, "{text:?}");
        assert_eq!(duplicate.survivor(), format!("r{of}"), "{text:?}");
        caught.push(duplicate.reason());
    }
    assert_eq!(survivors.len(), DISTINCT.len());
    let unique: std::collections::BTreeSet<&String> = survivors.iter().collect();
    assert_eq!(unique.len(), survivors.len());
    for tier in ["exact_duplicate", "near_duplicate", "semantic_duplicate"] {
        assert!(caught.contains(&tier), "no {tier} in {caught:?}");
    }
}
