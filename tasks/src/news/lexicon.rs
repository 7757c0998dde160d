//! A small finance and crypto sentiment lexicon, written for this project: word -> polarity.
//! Used by `embed_news` to score an item without downloading a model. Words are matched on
//! lowercase word stems (prefixes), so "rallies", "rallied" and "rally" all count.

/// Positive stems.
pub const POSITIVE: &[&str] = &[
    "rall",
    "surg",
    "soar",
    "jump",
    "climb",
    "gain",
    "rise",
    "rising",
    "rose",
    "bull",
    "record high",
    "breakout",
    "approv",
    "inflow",
    "adopt",
    "upgrad",
    "partner",
    "optimis",
    "strong demand",
    "recover",
    "rebound",
    "boost",
    "beat",
    "outperform",
    "accumulat",
    "support",
    "launch",
    "integrat",
    "milestone",
    "all-time high",
    "etf approval",
    "institutional demand",
    "buy",
    "upside",
    "positive",
    "growth",
    "expan",
    "win",
    "legaliz",
];

/// Negative stems.
pub const NEGATIVE: &[&str] = &[
    "plung",
    "crash",
    "tumbl",
    "slid",
    "slump",
    "sink",
    "sank",
    "fall",
    "fell",
    "drop",
    "declin",
    "bear",
    "selloff",
    "sell-off",
    "outflow",
    "hack",
    "exploit",
    "breach",
    "lawsuit",
    "sue",
    "ban",
    "crackdown",
    "fraud",
    "bankrupt",
    "insolv",
    "collaps",
    "depeg",
    "de-peg",
    "liquidat",
    "fear",
    "weak demand",
    "probe",
    "investigat",
    "fine",
    "warn",
    "risk",
    "loss",
    "downside",
    "negative",
    "halt",
    "delist",
    "reject",
    "default",
    "contagion",
    "panic",
];

/// Negators flip the polarity of the next sentiment word within three words.
pub const NEGATORS: &[&str] = &["not", "no", "never", "without", "despite", "fails", "failed"];

/// Sentiment in [-1, 1]: (positive - negative) / (positive + negative + 1), counting stems in
/// `text` (lowercased, split on non-letters), a negator within three words flipping a hit.
pub fn sentiment(text: &str) -> f64 {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split(|c: char| !c.is_alphanumeric() && c != '-').filter(|w| !w.is_empty()).collect();
    let (mut positive, mut negative) = (0.0f64, 0.0f64);
    let mut negate_until = 0usize;
    for (i, word) in words.iter().enumerate() {
        if NEGATORS.contains(word) {
            negate_until = i + 4;
            continue;
        }
        let bigram = words.get(i + 1).map(|next| format!("{word} {next}"));
        let hit = |stems: &[&str]| {
            stems.iter().any(|stem| {
                if stem.contains(' ') {
                    bigram.as_deref().is_some_and(|b| b.starts_with(stem))
                } else {
                    word.starts_with(stem)
                }
            })
        };
        let (is_pos, is_neg) = (hit(POSITIVE), hit(NEGATIVE));
        if is_pos == is_neg {
            continue;
        }
        let flip = i < negate_until;
        if is_pos != flip {
            positive += 1.0;
        } else {
            negative += 1.0;
        }
    }
    (positive - negative) / (positive + negative + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_have_the_right_sign() {
        assert!(sentiment("Bitcoin rallies after record inflows and ETF approval") > 0.5);
        assert!(sentiment("Exchange hacked; BTC plunges as liquidations spread") < -0.5);
        assert_eq!(sentiment("The conference schedule was published"), 0.0);
        assert!(sentiment("Regulators did not ban the token") > 0.0, "negation flips");
        assert!(sentiment("Price fails to rally") < 0.0);
    }
}
