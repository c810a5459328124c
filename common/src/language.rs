//! Language identification and script mixing (design section 7). Qwen models
//! drift into Chinese in plans written for other languages; a record in the
//! wrong language or script is rejected with that reason.

/// ISO 639-3 (whatlang) to ISO 639-1 (plans) for the languages plans name.
const ISO_639_3_TO_1: &[(&str, &str)] = &[
    ("ara", "ar"),
    ("bul", "bg"),
    ("ben", "bn"),
    ("cat", "ca"),
    ("ces", "cs"),
    ("dan", "da"),
    ("deu", "de"),
    ("ell", "el"),
    ("eng", "en"),
    ("spa", "es"),
    ("est", "et"),
    ("pes", "fa"),
    ("fin", "fi"),
    ("fra", "fr"),
    ("heb", "he"),
    ("hin", "hi"),
    ("hrv", "hr"),
    ("hun", "hu"),
    ("ind", "id"),
    ("ita", "it"),
    ("jpn", "ja"),
    ("kor", "ko"),
    ("lit", "lt"),
    ("lav", "lv"),
    ("nld", "nl"),
    ("nob", "no"),
    ("pol", "pl"),
    ("por", "pt"),
    ("ron", "ro"),
    ("rus", "ru"),
    ("slk", "sk"),
    ("slv", "sl"),
    ("srp", "sr"),
    ("swe", "sv"),
    ("tam", "ta"),
    ("tha", "th"),
    ("tgl", "tl"),
    ("tur", "tr"),
    ("ukr", "uk"),
    ("urd", "ur"),
    ("vie", "vi"),
    ("cmn", "zh"),
];

/// Below this many words whatlang's guess counts only when it calls it
/// reliable: a reviewer overruled `wrong_language` on a six-word English
/// answer it took for French (confidence 0.005), while its confidence on
/// longer English sentences it gets right can be as low as 0.1.
const SHORT_TEXT_WORDS: usize = 8;

/// The detected language of a text as an ISO 639-1 code, when whatlang is
/// confident enough to say.
pub fn detect_language(text: &str) -> Option<&'static str> {
    let info = whatlang::detect(text)?;
    if text.split_whitespace().count() < SHORT_TEXT_WORDS && !info.is_reliable() {
        return None;
    }
    let code = info.lang().code();
    ISO_639_3_TO_1
        .iter()
        .find(|(three, _)| *three == code)
        .map(|(_, one)| *one)
}

/// Whether a character is Han, Hiragana, Katakana or Hangul.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
}

/// Share of letters that are CJK, for spotting drift into Chinese (or
/// Japanese, Korean) inside a text that should be in another script.
pub fn cjk_share(text: &str) -> f64 {
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    if letters == 0 {
        return 0.0;
    }
    text.chars().filter(|c| is_cjk(*c)).count() as f64 / letters as f64
}

/// Plans whose language is written in CJK scripts.
pub fn language_uses_cjk(code: &str) -> bool {
    matches!(code, "zh" | "ja" | "ko")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_plan_languages() {
        let cases = [
            (
                "Your card was declined because a pending hold reduced your available balance.",
                "en",
            ),
            (
                "Su tarjeta fue rechazada porque una retención pendiente redujo su saldo disponible.",
                "es",
            ),
            (
                "Ihre Karte wurde abgelehnt, weil eine ausstehende Reservierung Ihr Guthaben verringert hat.",
                "de",
            ),
            (
                "您的银行卡被拒绝，因为待处理的预授权减少了您的可用余额。",
                "zh",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(detect_language(text), Some(want), "{text}");
        }
    }

    #[test]
    fn short_texts_whatlang_is_unsure_of_are_not_named() {
        // A reviewer overruled wrong_language on this answer: whatlang
        // guessed French, and said it was not sure.
        let short = "Outgoing domestic wires cost 25 dollars.";
        assert_eq!(whatlang::detect(short).unwrap().lang().code(), "fra");
        assert_eq!(detect_language(short), None);
        // Eight words or more are named as before.
        assert_eq!(
            detect_language("Statements are available in the app for 7 years."),
            Some("en")
        );
    }

    #[test]
    fn cjk_share_spots_drift() {
        assert_eq!(cjk_share("Plain English answer."), 0.0);
        let drifted = "Your available balance is lower because 预授权 holds reduce it.";
        assert!(
            cjk_share(drifted) > 0.05 && cjk_share(drifted) < 0.5,
            "{}",
            cjk_share(drifted)
        );
        assert!(cjk_share("您的银行卡被拒绝") > 0.99);
        assert_eq!(cjk_share("12345 !!"), 0.0);
    }
}
