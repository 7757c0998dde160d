//! A finance and crypto news sentiment lexicon: whole words and phrases with a polarity, phrase
//! rules for changes of direction and a short negation window. `embed_news` scores each item with
//! it, without downloading a model.
//!
//! Source and licence: every list in this file was written for this project from general
//! financial-news vocabulary (price and results direction words, results language, market, credit
//! and crypto incident words). It is our own work, licensed with the project (MIT OR Apache-2.0).
//! No third-party word list was copied or consulted for it (in particular not Loughran-McDonald,
//! whose licence restricts use). The checking set `testdata/sentiment_check.tsv` is separate: it
//! was labelled by reading, after these lists were written, and is a check, not a source.
//!
//! How a text is scored:
//! 1. Tokens: lowercase words of letters and digits. A hyphen, apostrophe, dot or `&` between two
//!    word characters stays inside the word ("sell-off", "won't", "u.s", "s&p"), a comma between
//!    digits too ("1,000"); a possessive "'s" is dropped. Clause punctuation (`, ; : . ! ?`,
//!    brackets, dashes, line ends) is a break: no phrase, pair or negation reaches across it.
//! 2. Phrases, whole words only, the longest first, left to right: [`POSITIVE`], [`NEGATIVE`],
//!    [`NEUTRAL`] (they score 0 and only keep their words from counting: "up to", "step down"),
//!    the negators and the generated change-of-direction phrases ("swung to a net profit", "up from
//!    a loss", "compared with a loss" = 0). `...` in a phrase stands for up to three other words
//!    ("approves ... etf"). A phrase that matched consumes its words.
//! 3. Pairs: a measure ([`MEASURES`]: profit, loss, costs, outflows, fears, ...) with a direction
//!    word ([`UP`], [`DOWN`]) just before it or just after it, with only filler words between
//!    ("narrowed its net loss", "net loss for the quarter narrowed"), scores once, direction times
//!    the measure's valence, and consumes both: "profit fell" -, "loss narrowed" +, "costs rose" -,
//!    "fears eased" +. The word before is tried first ("higher costs cut profit": two negatives).
//! 4. Words left over: direction words score their own sign (except the pair-only ones such as
//!    "narrowed", "widened", "eased"), measures their own polarity ("loss" -, "costs" 0), and
//!    "high"/"low" count only after a time qualifier ("52-week high", "new low").
//! 5. Negation: a negator ("not", "no", "never", "n't" words, "fails to") flips the next scoring
//!    match that starts within three words after it; "without" and "despite" neutralise it
//!    instead. Only the first match in the window is affected, and never across a break.
//!
//! The score keeps the scale the stage has always had: (positive - negative) / (positive +
//! negative + 1), in (-1, 1), 0 without a scoring match, one match = ±0.5. Features and models
//! downstream (the window means, the decayed sum) were built on that scale; only what counts as a
//! match changed.

use std::collections::HashMap;
use std::sync::LazyLock;

/// Words and phrases that score +1 (not direction words or measures: those are in [`UP`],
/// [`DOWN`] and [`MEASURES`]).
pub const POSITIVE: &[&str] = &[
    // Market tone.
    "bullish",
    "bull",
    "bulls",
    "bull market",
    "bull run",
    "optimism",
    "optimistic",
    "upbeat",
    "strong",
    "stronger",
    "strongest",
    "strength",
    "strengthen",
    "strengthens",
    "strengthened",
    "strengthening",
    "robust",
    "resilient",
    "resilience",
    "healthy",
    "upside",
    "uptrend",
    "upturn",
    "upswing",
    "uptick",
    "upward",
    "upwards",
    "tailwind",
    "tailwinds",
    "risk-on",
    "risk appetite",
    "breakout",
    "relief rally",
    "short squeeze",
    "buying pressure",
    "dip buying",
    "buy the dip",
    "positive",
    "favorable",
    "favourable",
    "cheer",
    "cheers",
    "cheered",
    "cheering",
    "boost",
    "boosts",
    "boosted",
    "boosting",
    "buoy",
    "buoys",
    "buoyed",
    "buoying",
    "bolster",
    "bolsters",
    "bolstered",
    "bolstering",
    "stabilise",
    "stabilises",
    "stabilised",
    "stabilising",
    "stabilize",
    "stabilizes",
    "stabilized",
    "stabilizing",
    "regain",
    "regains",
    "regained",
    "regaining",
    "re-peg",
    "repeg",
    "repegged",
    "re-pegged",
    // Levels.
    "record",
    "record high",
    "record highs",
    "all-time high",
    "all-time highs",
    "best",
    "best-ever",
    "highest",
    // Results and ratings.
    "profitable",
    "beat",
    "beats",
    "beating",
    "exceed",
    "exceeds",
    "exceeded",
    "exceeding",
    "above expectations",
    "above estimates",
    "above forecasts",
    "tops estimates",
    "topped estimates",
    "better-than-expected",
    "better than expected",
    "outperform",
    "outperforms",
    "outperformed",
    "outperforming",
    "outperformance",
    "upgrade",
    "upgrades",
    "upgraded",
    "upgrading",
    "buy rating",
    "rated buy",
    "strong buy",
    "improve",
    "improves",
    "improved",
    "improving",
    "improvement",
    "improvements",
    "success",
    "successful",
    "successfully",
    "milestone",
    "win",
    "wins",
    "won",
    "winning",
    "received an order",
    "receives an order",
    "received orders",
    "receives orders",
    "received a contract",
    "receives a contract",
    "won a contract",
    "wins a contract",
    "awarded a contract",
    "secured a contract",
    "secures a contract",
    "new orders",
    // Crypto.
    "adoption",
    "approval",
    "approvals",
    "approve ... etf",
    "approve ... etfs",
    "approves ... etf",
    "approves ... etfs",
    "approved ... etf",
    "approved ... etfs",
    "etf ... approved",
    "etfs ... approved",
    "accumulate",
    "accumulates",
    "accumulated",
    "accumulating",
    "accumulation",
    "legalise",
    "legalises",
    "legalised",
    "legalising",
    "legalize",
    "legalizes",
    "legalized",
    "legalizing",
    "legalisation",
    "legalization",
];

/// Words and phrases that score -1.
pub const NEGATIVE: &[&str] = &[
    // Market tone.
    "bearish",
    "bear",
    "bears",
    "bear market",
    "pessimism",
    "pessimistic",
    "gloom",
    "gloomy",
    "bleak",
    "grim",
    "dire",
    "weak",
    "weaker",
    "weakest",
    "weakness",
    "downside",
    "downturn",
    "downtrend",
    "downward",
    "downwards",
    "headwind",
    "headwinds",
    "risk-off",
    "risky",
    "selloff",
    "selloffs",
    "sell-off",
    "sell-offs",
    "sell off",
    "sells off",
    "sold off",
    "selling pressure",
    "panic selling",
    "sell rating",
    "rated sell",
    "rout",
    "capitulation",
    "bloodbath",
    "turmoil",
    "crisis",
    "crises",
    "contagion",
    "panic",
    "panics",
    "panicked",
    "panicking",
    "fud",
    "jitters",
    "woes",
    "recession",
    "crunch",
    "under pressure",
    "weigh on",
    "weighs on",
    "weighed on",
    "weighing on",
    "hit by",
    "hit hard",
    "hard hit",
    "hurt",
    "hurts",
    "hurting",
    "dent",
    "dents",
    "dented",
    "denting",
    "hamper",
    "hampers",
    "hampered",
    "hampering",
    "threat",
    "threats",
    "threaten",
    "threatens",
    "threatened",
    "threatening",
    "sour",
    "sours",
    "soured",
    "souring",
    "stumble",
    "stumbles",
    "stumbled",
    "stumbling",
    "wiped out",
    "wipes out",
    "erase",
    "erases",
    "erased",
    "erasing",
    "lose",
    "loses",
    "lost",
    "losing",
    "negative",
    // Levels.
    "worst",
    "worst-ever",
    "lowest",
    "record low",
    "record lows",
    "record loss",
    "record losses",
    "record outflows",
    "record drop",
    "record decline",
    "record fall",
    "record liquidations",
    // Results and ratings.
    "unprofitable",
    "loss-making",
    "profit warning",
    "profit warnings",
    "profit-taking",
    "profit taking",
    "take profits",
    "took profits",
    "taking profits",
    "miss",
    "misses",
    "missed",
    "missing",
    "below expectations",
    "below estimates",
    "worse-than-expected",
    "worse than expected",
    "fell short",
    "falls short",
    "short of expectations",
    "shortfall",
    "disappoint",
    "disappoints",
    "disappointed",
    "disappointing",
    "disappointment",
    "downgrade",
    "downgrades",
    "downgraded",
    "downgrading",
    "warn",
    "warns",
    "warned",
    "warning",
    "warnings",
    "lays off",
    "laid off",
    "laying off",
    "job cuts",
    // Failure, credit and legal.
    "fail",
    "fails",
    "failed",
    "failing",
    "failure",
    "failures",
    "collapse",
    "collapses",
    "collapsed",
    "collapsing",
    "bankrupt",
    "bankruptcy",
    "bankruptcies",
    "insolvent",
    "insolvency",
    "default",
    "defaults",
    "defaulted",
    "defaulting",
    "bank run",
    "shut down",
    "shuts down",
    "shutting down",
    "shutdown",
    "wind down",
    "winds down",
    "winding down",
    "wound down",
    "fraud",
    "frauds",
    "fraudulent",
    "scam",
    "scams",
    "scammer",
    "scammers",
    "ponzi",
    "lawsuit",
    "lawsuits",
    "sue",
    "sues",
    "sued",
    "suing",
    "litigation",
    "probe",
    "probes",
    "probed",
    "probing",
    "investigation",
    "investigations",
    "investigate",
    "investigates",
    "investigated",
    "investigating",
    "subpoena",
    "subpoenas",
    "subpoenaed",
    "under scrutiny",
    "indicted",
    "indict",
    "indicts",
    "indictment",
    "indictments",
    "arrest",
    "arrests",
    "arrested",
    "sanctions",
    "sanction",
    "sanctioned",
    "sanctioning",
    "crackdown",
    "crackdowns",
    "crack down",
    "cracks down",
    "cracked down",
    "cracking down",
    "ban",
    "bans",
    "banned",
    "banning",
    "fined",
    "fines",
    "a fine",
    "penalty",
    "penalties",
    "seize",
    "seizes",
    "seized",
    "seizure",
    "seizing",
    "seizures",
    "reject",
    "rejects",
    "rejected",
    "rejecting",
    "rejection",
    "denies",
    "denied",
    "deny",
    "denying",
    "delay",
    "delays",
    "delayed",
    "delaying",
    "postponed",
    "postpone",
    "postpones",
    "postponing",
    // Crypto incidents.
    "hack",
    "hacks",
    "hacked",
    "hacker",
    "hackers",
    "hacking",
    "exploit",
    "exploits",
    "exploited",
    "exploiting",
    "exploiter",
    "breach",
    "breaches",
    "breached",
    "vulnerability",
    "vulnerabilities",
    "stolen",
    "steal",
    "stole",
    "steals",
    "stealing",
    "theft",
    "thefts",
    "rug pull",
    "rug pulls",
    "rug-pull",
    "rugpull",
    "depeg",
    "depegs",
    "depegged",
    "depegging",
    "de-peg",
    "de-pegs",
    "de-pegged",
    "de-pegging",
    "loses peg",
    "loses its peg",
    "lost its peg",
    "liquidated",
    "liquidate",
    "liquidates",
    "liquidation",
    "liquidating",
    "delist",
    "delists",
    "delisted",
    "delisting",
    "delistings",
    "halt",
    "halts",
    "halted",
    "halting",
    "suspend",
    "suspends",
    "suspended",
    "suspending",
    "suspension",
    "paused withdrawals",
    "pauses withdrawals",
    "freeze",
    "freezes",
    "froze",
    "frozen",
    "outage",
    "outages",
];

/// Phrases that score 0: they keep their words from counting ("up to", "step down", "record
/// date"). Rate moves are here on purpose: whether a hike or a cut is good news depends on who
/// reads it (a borrower, a bank, a holder of risk assets), so neither counts.
pub const NEUTRAL: &[&str] = &[
    "up to",
    "set up",
    "sets up",
    "setting up",
    "sign up",
    "signs up",
    "signed up",
    "team up",
    "teams up",
    "teamed up",
    "line up",
    "lined up",
    "open up",
    "opens up",
    "opened up",
    "up for",
    "end up",
    "ends up",
    "ended up",
    "make up",
    "makes up",
    "made up",
    "wrap up",
    "wraps up",
    "follow up",
    "step down",
    "steps down",
    "stepped down",
    "stepping down",
    "down payment",
    "play down",
    "plays down",
    "played down",
    "playing down",
    "lower house",
    "higher education",
    "high court",
    "high school",
    "capital gains",
    "on record",
    "record date",
    "track record",
    "off the record",
    "risk assets",
    "risk management",
    "fear and greed",
    "by default",
    "halving",
    "profit and loss",
    "profit or loss",
    "rate cut",
    "rate cuts",
    "cut rates",
    "cuts rates",
    "cutting rates",
    "cut interest rates",
    "cuts interest rates",
    "rate hike",
    "rate hikes",
    "hike rates",
    "hikes rates",
    "hiked rates",
    "raise rates",
    "raises rates",
    "raised rates",
    "raising rates",
    "raise interest rates",
    "raises interest rates",
    "raised interest rates",
    "raising interest rates",
    "seek approval",
    "seeks approval",
    "sought approval",
    "seeking approval",
    "await approval",
    "awaits approval",
    "awaiting approval",
    "pending approval",
    "subject to approval",
    "for approval",
    "not only",
    "no doubt",
    "no matter",
    "no change",
];

/// Negators: they flip the next scoring match that starts within [`NEGATION_WINDOW`] words.
pub const NEGATE: &[&str] = &[
    "not",
    "no",
    "never",
    "cannot",
    "can't",
    "don't",
    "doesn't",
    "didn't",
    "won't",
    "isn't",
    "aren't",
    "wasn't",
    "weren't",
    "hasn't",
    "haven't",
    "hadn't",
    "couldn't",
    "wouldn't",
    "shouldn't",
    "fail to",
    "fails to",
    "failed to",
    "failing to",
    "unable to",
];

/// Neutralisers: the next scoring match within [`NEGATION_WINDOW`] words counts 0 ("rose despite
/// fears", "closed without losses").
pub const NEUTRALISE: &[&str] = &["without", "despite", "in spite of"];

/// How many words after a negator its effect reaches.
pub const NEGATION_WINDOW: usize = 3;

/// Direction words that go up. They score +1 alone, and pair with a measure.
pub const UP: &[&str] = &[
    "increase",
    "increases",
    "increased",
    "increasing",
    "rise",
    "rises",
    "rose",
    "risen",
    "rising",
    "grow",
    "grows",
    "grew",
    "grown",
    "growing",
    "up",
    "higher",
    "gain",
    "gains",
    "gained",
    "gaining",
    "jump",
    "jumps",
    "jumped",
    "jumping",
    "climb",
    "climbs",
    "climbed",
    "climbing",
    "surge",
    "surges",
    "surged",
    "surging",
    "soar",
    "soars",
    "soared",
    "soaring",
    "rally",
    "rallies",
    "rallied",
    "rallying",
    "rebound",
    "rebounds",
    "rebounded",
    "rebounding",
    "recover",
    "recovers",
    "recovered",
    "recovering",
    "recovery",
    "advance",
    "advances",
    "advancing",
    "spike",
    "spikes",
    "spiked",
    "spiking",
    "skyrocket",
    "skyrockets",
    "skyrocketed",
    "skyrocketing",
    "doubled",
    "doubles",
    "doubling",
    "tripled",
    "triples",
    "tripling",
    "raise",
    "raises",
    "raised",
    "raising",
    "lift",
    "lifts",
    "lifted",
    "lifting",
];

/// Direction words that go up but score only in a pair ("losses widened" -, "widened" alone 0).
pub const UP_PAIR_ONLY: &[&str] = &[
    "widen",
    "widens",
    "widened",
    "widening",
    "wider",
    "bigger",
    "larger",
    "mount",
    "mounts",
    "mounted",
    "mounting",
    "deepen",
    "deepens",
    "deepened",
    "deepening",
    "swell",
    "swells",
    "swelled",
    "swelling",
    "swollen",
    "balloon",
    "balloons",
    "ballooned",
    "ballooning",
    "accelerate",
    "accelerates",
    "accelerated",
    "accelerating",
    "hotter",
    "heighten",
    "heightens",
    "heightened",
    "heightening",
];

/// Direction words that go down. They score -1 alone, and pair with a measure.
pub const DOWN: &[&str] = &[
    "decrease",
    "decreases",
    "decreased",
    "decreasing",
    "decline",
    "declines",
    "declined",
    "declining",
    "fall",
    "falls",
    "fell",
    "fallen",
    "falling",
    "drop",
    "drops",
    "dropped",
    "dropping",
    "down",
    "lower",
    "lowered",
    "lowers",
    "lowering",
    "slip",
    "slips",
    "slipped",
    "slipping",
    "slide",
    "slides",
    "slid",
    "sliding",
    "sink",
    "sinks",
    "sank",
    "sunk",
    "sinking",
    "tumble",
    "tumbles",
    "tumbled",
    "tumbling",
    "plunge",
    "plunges",
    "plunged",
    "plunging",
    "plummet",
    "plummets",
    "plummeted",
    "plummeting",
    "slump",
    "slumps",
    "slumped",
    "slumping",
    "crash",
    "crashes",
    "crashed",
    "crashing",
    "dip",
    "dips",
    "dipped",
    "dipping",
    "shrink",
    "shrinks",
    "shrank",
    "shrunk",
    "shrinking",
    "cut",
    "cuts",
    "cutting",
    "slash",
    "slashes",
    "slashed",
    "slashing",
    "halve",
    "halves",
    "halved",
    "retreat",
    "retreats",
    "retreated",
    "retreating",
    "tank",
    "tanks",
    "tanked",
    "tanking",
    "slow",
    "slows",
    "slowed",
    "slowing",
    "slowdown",
    "weaken",
    "weakens",
    "weakened",
    "weakening",
    "sag",
    "sags",
    "sagged",
    "sagging",
    "shed",
    "sheds",
    "shedding",
    "erode",
    "erodes",
    "eroded",
    "eroding",
];

/// Direction words that go down but score only in a pair ("loss narrowed" +, "fears eased" +).
pub const DOWN_PAIR_ONLY: &[&str] = &[
    "narrow",
    "narrows",
    "narrowed",
    "narrowing",
    "narrower",
    "smaller",
    "reduce",
    "reduces",
    "reduced",
    "reducing",
    "reduction",
    "ease",
    "eases",
    "eased",
    "easing",
    "cool",
    "cools",
    "cooled",
    "cooling",
    "cooler",
    "soften",
    "softens",
    "softened",
    "softening",
    "softer",
    "subside",
    "subsides",
    "subsided",
    "subsiding",
    "abate",
    "abates",
    "abated",
    "abating",
    "moderate",
    "moderates",
    "moderated",
    "moderating",
    "trim",
    "trims",
    "trimmed",
    "trimming",
];

/// Measures: (word, polarity alone, valence). A pair with a direction word scores direction times
/// valence: profit (+1) that fell is -1, a loss (-1) that narrowed is +1, costs (0 alone) that
/// rose are -1.
pub const MEASURES: &[(&str, i8, i8)] = &[
    ("profit", 1, 1),
    ("profits", 1, 1),
    ("profitability", 1, 1),
    ("growth", 1, 1),
    ("inflow", 1, 1),
    ("inflows", 1, 1),
    ("earnings", 0, 1),
    ("revenue", 0, 1),
    ("revenues", 0, 1),
    ("sales", 0, 1),
    ("turnover", 0, 1),
    ("income", 0, 1),
    ("ebitda", 0, 1),
    ("eps", 0, 1),
    ("orders", 0, 1),
    ("demand", 0, 1),
    ("output", 0, 1),
    ("production", 0, 1),
    ("margin", 0, 1),
    ("margins", 0, 1),
    ("dividend", 0, 1),
    ("dividends", 0, 1),
    ("price", 0, 1),
    ("prices", 0, 1),
    ("shares", 0, 1),
    ("stock", 0, 1),
    ("stocks", 0, 1),
    ("loss", -1, -1),
    ("losses", -1, -1),
    ("outflow", -1, -1),
    ("outflows", -1, -1),
    ("liquidations", -1, -1),
    ("fear", -1, -1),
    ("fears", -1, -1),
    ("concern", -1, -1),
    ("concerns", -1, -1),
    ("worry", -1, -1),
    ("worries", -1, -1),
    ("uncertainty", -1, -1),
    ("risk", -1, -1),
    ("risks", -1, -1),
    ("tension", -1, -1),
    ("tensions", -1, -1),
    ("layoffs", -1, -1),
    ("cost", 0, -1),
    ("costs", 0, -1),
    ("expense", 0, -1),
    ("expenses", 0, -1),
    ("debt", 0, -1),
    ("debts", 0, -1),
    ("deficit", 0, -1),
    ("unemployment", 0, -1),
    ("inflation", 0, -1),
    ("pressure", 0, -1),
    ("pressures", 0, -1),
    ("volatility", 0, -1),
];

/// Words that may stand between a measure and the direction word after it ("net loss for the
/// third quarter narrowed", "profit before tax has risen").
pub const FILLERS_AFTER: &[&str] = &[
    "for",
    "the",
    "in",
    "of",
    "its",
    "their",
    "year",
    "years",
    "quarter",
    "quarters",
    "period",
    "first",
    "second",
    "third",
    "fourth",
    "half",
    "q1",
    "q2",
    "q3",
    "q4",
    "net",
    "operating",
    "before",
    "after",
    "tax",
    "taxes",
    "per",
    "share",
    "margin",
    "margins",
    "has",
    "have",
    "had",
    "was",
    "were",
    "is",
    "are",
    "been",
    "be",
    "will",
    "also",
    "further",
    "sharply",
    "slightly",
    "significantly",
    "substantially",
    "markedly",
    "considerably",
];
/// At most this many fillers between a measure and the direction word after it.
const MAX_FILLERS_AFTER: usize = 5;

/// Words that may stand between a direction word and the measure after it ("narrowed its net
/// loss", "an increase in costs").
pub const FILLERS_BEFORE: &[&str] = &[
    "its",
    "their",
    "his",
    "her",
    "our",
    "the",
    "a",
    "an",
    "in",
    "of",
    "net",
    "operating",
    "pre-tax",
    "pretax",
    "quarterly",
    "annual",
    "full-year",
    "underlying",
    "adjusted",
    "gross",
];
/// At most this many fillers between a direction word and the measure after it.
const MAX_FILLERS_BEFORE: usize = 3;

/// Words before "high"/"low" that make it a price level ("new high", "record low" is a phrase);
/// words ending in "-day", "-week", "-month", "-year" or "-decade" count too ("52-week high").
pub const LEVEL_QUALIFIERS: &[&str] =
    &["new", "fresh", "weekly", "monthly", "yearly", "annual", "day", "week", "month", "year", "decade", "session"];

/// Generated change-of-direction phrases (all lowercase, words separated by one space).
///
/// * turning points: "swung/turned/returned/moved/went/back to/into [a/an] [net/operating/...]
///   profit" +, the same with "loss" -, "into the black" +, "into the red" -; falls ("slipped/
///   fell/dipped/sank/plunged/tumbled to/into [a] loss") -; "turned/turns/became profitable" +.
/// * a loss or profit that belongs to the comparison period scores 0: "compared with/to,
///   versus, vs, against, from [a] [net...] loss/profit"; with "up" in front ("up from a loss")
///   it is + (a result now above a loss), "down from a profit" is -.
pub fn change_phrases() -> Vec<(String, i8)> {
    const QUALIFIERS: &[&str] = &["", "net ", "operating ", "pre-tax ", "pretax ", "quarterly "];
    const TURNS: &[&str] = &[
        "swung",
        "swings",
        "swing",
        "swinging",
        "turned",
        "turns",
        "turn",
        "turning",
        "returned",
        "returns",
        "return",
        "returning",
        "moved",
        "moves",
        "went",
        "back",
    ];
    const FALLS: &[&str] = &["slipped", "slips", "fell", "falls", "dipped", "sank", "plunged", "tumbled"];
    let mut out = Vec::new();
    for verb in TURNS.iter().chain(FALLS) {
        let falls = FALLS.contains(verb);
        for prep in ["to", "into"] {
            for article in ["", "a ", "an "] {
                for qualifier in QUALIFIERS {
                    for (object, sign) in [("loss", -1), ("losses", -1), ("profit", 1), ("profits", 1)] {
                        if falls && sign > 0 {
                            continue;
                        }
                        out.push((format!("{verb} {prep} {article}{qualifier}{object}"), sign));
                    }
                }
            }
            out.push((format!("{verb} {prep} the red"), -1));
            if !falls {
                out.push((format!("{verb} {prep} the black"), 1));
            }
        }
    }
    for verb in ["turned", "turns", "turn", "became", "becomes", "become"] {
        out.push((format!("{verb} profitable"), 1));
    }
    for phrase in ["in the black", "back in the black", "back in profit"] {
        out.push((phrase.to_string(), 1));
    }
    out.push(("in the red".to_string(), -1));
    for lead in ["", "up ", "down "] {
        for comparison in ["compared with", "compared to", "versus", "vs", "against", "from"] {
            if !lead.is_empty() && comparison != "from" {
                continue;
            }
            for article in ["", "a ", "an ", "the "] {
                for qualifier in QUALIFIERS {
                    for (object, is_loss) in [("loss", true), ("losses", true), ("profit", false), ("profits", false)] {
                        let sign = match (lead, is_loss) {
                            ("up ", true) => 1,
                            ("down ", false) => -1,
                            // "up from a profit" / "down from a loss": left to "up"/"down" alone.
                            ("up ", false) | ("down ", true) => continue,
                            _ => 0,
                        };
                        out.push((format!("{lead}{comparison} {article}{qualifier}{object}"), sign));
                    }
                }
            }
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Score(i8),
    Negate,
    Neutralise,
}

#[derive(Debug, PartialEq, Eq)]
enum Part {
    Word(String),
    /// Up to [`GAP_WORDS`] words.
    Gap,
}
const GAP_WORDS: usize = 3;

struct Phrase {
    parts: Vec<Part>,
    kind: Kind,
}

struct Lexicon {
    /// By first word; the longest phrases first.
    phrases: HashMap<String, Vec<Phrase>>,
    /// Sign and whether the word scores alone.
    directions: HashMap<&'static str, (i8, bool)>,
    /// Polarity alone and valence.
    measures: HashMap<&'static str, (i8, i8)>,
}

static LEXICON: LazyLock<Lexicon> = LazyLock::new(|| {
    let mut entries: Vec<(String, Kind)> = Vec::new();
    let lists: [(&[&str], Kind); 5] = [
        (POSITIVE, Kind::Score(1)),
        (NEGATIVE, Kind::Score(-1)),
        (NEUTRAL, Kind::Score(0)),
        (NEGATE, Kind::Negate),
        (NEUTRALISE, Kind::Neutralise),
    ];
    for (list, kind) in lists {
        entries.extend(list.iter().map(|p| (p.to_string(), kind)));
    }
    entries.extend(change_phrases().into_iter().map(|(p, sign)| (p, Kind::Score(sign))));
    let mut phrases: HashMap<String, Vec<Phrase>> = HashMap::new();
    for (text, kind) in entries {
        let parts: Vec<Part> =
            text.split_whitespace().map(|w| if w == "..." { Part::Gap } else { Part::Word(w.to_string()) }).collect();
        let Some(Part::Word(first)) = parts.first() else { continue };
        phrases.entry(first.clone()).or_default().push(Phrase { parts, kind });
    }
    for list in phrases.values_mut() {
        list.sort_by_key(|p| std::cmp::Reverse(p.parts.iter().filter(|part| matches!(part, Part::Word(_))).count()));
    }
    let mut directions = HashMap::new();
    for (list, value) in
        [(UP, (1, true)), (UP_PAIR_ONLY, (1, false)), (DOWN, (-1, true)), (DOWN_PAIR_ONLY, (-1, false))]
    {
        directions.extend(list.iter().map(|w| (*w, value)));
    }
    let measures = MEASURES.iter().map(|(w, alone, valence)| (*w, (*alone, *valence))).collect();
    Lexicon { phrases, directions, measures }
});

/// Lowercase word tokens; `None` is a clause break (see the module doc).
pub fn tokens(text: &str) -> Vec<Option<String>> {
    let chars: Vec<char> = text
        .to_lowercase()
        .chars()
        .map(|c| if matches!(c, '\u{2019}' | '\u{2018}' | '`') { '\'' } else { c })
        .collect();
    let mut out: Vec<Option<String>> = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Option<String>>| {
        if let Some(stem) = word.strip_suffix("'s") {
            *word = stem.to_string();
        }
        if !word.is_empty() {
            out.push(Some(std::mem::take(word)));
        }
        word.clear();
    };
    for (i, &c) in chars.iter().enumerate() {
        if c.is_alphanumeric() {
            word.push(c);
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        let between = |f: fn(&char) -> bool| prev.as_ref().is_some_and(f) && next.as_ref().is_some_and(f);
        let joins = match c {
            '-' | '\'' | '.' | '&' => !word.is_empty() && between(|c| c.is_alphanumeric()),
            ',' => between(|c| c.is_ascii_digit()),
            _ => false,
        };
        if joins {
            word.push(c);
            continue;
        }
        flush(&mut word, &mut out);
        let breaks = matches!(
            c,
            ',' | ';'
                | ':'
                | '.'
                | '!'
                | '?'
                | '('
                | ')'
                | '['
                | ']'
                | '{'
                | '}'
                | '|'
                | '-'
                | '\u{2013}'
                | '\u{2014}'
                | '\n'
                | '\u{2022}'
        );
        if breaks && out.last().is_some_and(|t| t.is_some()) {
            out.push(None);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// One match in a text: the words it covers and the polarity it scores after negation (-1, 0
/// or 1; 0 for neutral phrases and neutralised matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub words: String,
    pub polarity: i8,
}

struct Hit {
    positions: Vec<usize>,
    kind: Kind,
}

fn match_parts(tokens: &[Option<String>], consumed: &[bool], at: usize, parts: &[Part], out: &mut Vec<usize>) -> bool {
    let Some((first, rest)) = parts.split_first() else { return true };
    match first {
        Part::Word(w) => {
            if at < tokens.len() && !consumed[at] && tokens[at].as_deref() == Some(w.as_str()) {
                out.push(at);
                if match_parts(tokens, consumed, at + 1, rest, out) {
                    return true;
                }
                out.pop();
            }
            false
        }
        Part::Gap => {
            for skip in 0..=GAP_WORDS {
                if (at..at + skip).any(|p| tokens.get(p).is_none_or(|t| t.is_none())) {
                    break;
                }
                if match_parts(tokens, consumed, at + skip, rest, out) {
                    return true;
                }
            }
            false
        }
    }
}

/// Every match in `text`, in order (see the module doc for the rules).
pub fn matches(text: &str) -> Vec<Match> {
    let lex = &*LEXICON;
    let tokens = tokens(text);
    let n = tokens.len();
    let word = |i: usize| tokens.get(i).and_then(|t| t.as_deref());
    let mut consumed = vec![false; n];
    let mut hits: Vec<Hit> = Vec::new();
    // 1. Phrases and listed words, the longest first.
    for i in 0..n {
        let Some(w) = word(i) else { continue };
        if consumed[i] {
            continue;
        }
        for phrase in lex.phrases.get(w).map(Vec::as_slice).unwrap_or_default() {
            let mut positions = Vec::new();
            if match_parts(&tokens, &consumed, i, &phrase.parts, &mut positions) {
                positions.iter().for_each(|&p| consumed[p] = true);
                hits.push(Hit { positions, kind: phrase.kind });
                break;
            }
        }
    }
    // 2. A measure with a direction word before it, else after it, only fillers between.
    let partner = |consumed: &[bool], i: usize, step: isize, fillers: &[&str], max: usize| -> Option<usize> {
        let mut j = i as isize;
        let mut skipped = 0;
        loop {
            j += step;
            let w = word(usize::try_from(j).ok()?)?;
            if consumed[j as usize] {
                return None;
            }
            if lex.directions.contains_key(w) {
                return Some(j as usize);
            }
            if !fillers.contains(&w) || skipped == max {
                return None;
            }
            skipped += 1;
        }
    };
    for i in 0..n {
        let Some(&(_, valence)) = word(i).and_then(|w| lex.measures.get(w)) else { continue };
        if consumed[i] {
            continue;
        }
        let found = partner(&consumed, i, -1, FILLERS_BEFORE, MAX_FILLERS_BEFORE)
            .or_else(|| partner(&consumed, i, 1, FILLERS_AFTER, MAX_FILLERS_AFTER));
        if let Some(j) = found {
            let sign = word(j).and_then(|w| lex.directions.get(w)).map_or(0, |d| d.0);
            consumed[i] = true;
            consumed[j] = true;
            hits.push(Hit { positions: vec![i.min(j), i.max(j)], kind: Kind::Score(sign * valence) });
        }
    }
    // 3. Words left over.
    for (i, used) in consumed.iter().enumerate() {
        let Some(w) = word(i) else { continue };
        if *used {
            continue;
        }
        let alone = if let Some(&(sign, scores)) = lex.directions.get(w) {
            if scores { sign } else { 0 }
        } else if let Some(&(polarity, _)) = lex.measures.get(w) {
            polarity
        } else if matches!(w, "high" | "highs" | "low" | "lows") && i > 0 && word(i - 1).is_some_and(level_qualifier) {
            if w.starts_with("high") { 1 } else { -1 }
        } else {
            0
        };
        if alone != 0 {
            hits.push(Hit { positions: vec![i], kind: Kind::Score(alone) });
        }
    }
    // 4. Negation, in text order.
    hits.sort_by_key(|h| h.positions[0]);
    let breaks_before: Vec<usize> = tokens
        .iter()
        .scan(0, |count, t| {
            let before = *count;
            *count += usize::from(t.is_none());
            Some(before)
        })
        .collect();
    let mut pending: Option<(Kind, usize)> = None;
    let mut out = Vec::new();
    for hit in hits {
        let start = hit.positions[0];
        let end = *hit.positions.last().unwrap_or(&start);
        let words = hit.positions.iter().filter_map(|&p| word(p)).collect::<Vec<_>>().join(" ");
        match hit.kind {
            Kind::Negate | Kind::Neutralise => pending = Some((hit.kind, end)),
            Kind::Score(mut polarity) => {
                if polarity != 0
                    && let Some((kind, after)) = pending.take()
                    && start <= after + NEGATION_WINDOW
                    && breaks_before[start] == breaks_before[after]
                {
                    polarity = if kind == Kind::Negate { -polarity } else { 0 };
                }
                out.push(Match { words, polarity });
            }
        }
    }
    out
}

fn level_qualifier(word: &str) -> bool {
    LEVEL_QUALIFIERS.contains(&word)
        || ["-day", "-week", "-month", "-year", "-decade"].iter().any(|suffix| word.ends_with(suffix))
}

/// Sentiment in (-1, 1): (positive - negative) / (positive + negative + 1) over the matches of
/// `text` after negation (see the module doc).
pub fn sentiment(text: &str) -> f64 {
    let (mut positive, mut negative) = (0.0f64, 0.0f64);
    for m in matches(text) {
        match m.polarity {
            1 => positive += 1.0,
            -1 => negative += 1.0,
            _ => {}
        }
    }
    (positive - negative) / (positive + negative + 1.0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn sign(x: f64) -> i8 {
        if x > 0.0 {
            1
        } else if x < 0.0 {
            -1
        } else {
            0
        }
    }

    fn assert_signs(cases: &[(&str, i8)]) {
        for (text, expected) in cases {
            assert_eq!(sign(sentiment(text)), *expected, "{text}: {:?}", matches(text));
        }
    }

    #[test]
    fn scores_have_the_right_sign() {
        assert!(sentiment("Bitcoin rallies after record inflows and ETF approval") > 0.5);
        assert!(sentiment("Exchange hacked; BTC plunges as liquidations spread") < -0.5);
        assert_eq!(sentiment("The conference schedule was published"), 0.0);
        assert!(sentiment("Regulators did not ban the token") > 0.0, "negation flips");
        assert!(sentiment("Price fails to rally") < 0.0);
        assert_eq!(sentiment("Bitcoin rallied"), 0.5, "one match is ±0.5, as before");
        assert!((sentiment("Bitcoin rallies, surges and soars") - 0.75).abs() < 1e-12);
    }

    // The error classes of the issue. Every sentence below was scored wrong by the old prefix
    // matcher (0, or the wrong sign).

    #[test]
    fn general_finance_direction_words_count() {
        assert_signs(&[
            ("Net sales increased 12% to EUR 48 million", 1),
            ("Revenue was up 15% year on year", 1),
            ("Order intake grew 9% in the quarter", 1),
            ("Gross margin improved to 38%", 1),
            ("The company won a three-year contract", 1),
            ("The shipyard received an order for two ferries", 1),
            ("Net sales decreased 8%", -1),
            ("Traffic volumes were down 4%", -1),
            ("The company reported lower sales", -1),
        ]);
    }

    #[test]
    fn a_loss_in_a_positive_sentence_is_not_negative() {
        assert_signs(&[
            ("The company swung to a profit from a loss", 1),
            ("The net loss narrowed to EUR 0.8 million", 1),
            ("The group narrowed its operating loss", 1),
            ("Operating profit was EUR 1.4 mn, up from a loss of EUR 0.6 mn", 1),
            ("The exchange turned profitable in the second half", 1),
            ("The lender returned to profit", 1),
        ]);
        // The phrase consumes "loss": one positive match, nothing negative.
        assert_eq!(matches("Loss narrowed"), vec![Match { words: "loss narrowed".into(), polarity: 1 }]);
    }

    #[test]
    fn words_match_whole_not_as_prefixes() {
        assert_signs(&[
            ("The Bank of England left rates unchanged", 0),
            ("The banking unit appointed a new head", 0),
            ("A jazz band played at the dinner", 0),
            ("The winter schedule was published", 0),
            ("A trading window opens for employees", 0),
            ("Shipping through the Suez Canal continued", 0),
            ("The mill produces fine papers", 0),
            ("The regulator issued its monthly bulletin", 0),
            ("The private equity firm agreed a buyout of the group", 0),
        ]);
        // The words themselves still count, in the forms listed.
        assert_signs(&[
            ("Regulators ban the token", -1),
            ("Bulls return", 1),
            ("The exchange wins", 1),
            ("Investors sue the exchange", -1),
            ("The exchange was fined", -1),
            ("Bitcoin rallies", 1),
            ("Bitcoin rallied", 1),
            ("Bitcoin is rallying", 1),
        ]);
    }

    #[test]
    fn business_events_are_not_positive_on_their_own() {
        assert_signs(&[
            ("The exchange will support the new token", 0),
            ("The two firms agreed to partner on payments", 0),
            ("Shareholders approve the dividend", 0),
            ("The company launched a mobile app", 0),
            ("The firm plans to expand into Latin America", 0),
        ]);
    }

    #[test]
    fn changes_of_direction_and_negation() {
        assert_signs(&[
            ("The company swung to a net loss in the quarter", -1),
            ("Pre-tax profit fell to EUR 2.1 million", -1),
            ("The operating loss widened to EUR 4.0 million", -1),
            ("Costs rose faster than expected", -1),
            ("The company cut costs by EUR 5 million", 1),
            ("Inflation cooled for a third month", 1),
            ("The retailer issued a profit warning", -1),
            ("The company does not expect further losses", 1),
            ("Shares rose despite concerns about the outlook", 1),
            ("Bitcoin won't recover soon, analysts say", -1),
            // A break ends the negation window.
            ("No comment, the stock rallied", 1),
            ("Bitcoin hit a nine-month high", 1),
            ("Ether fell to a two-month low", -1),
            ("The next bitcoin halving is expected in April", 0),
        ]);
    }

    #[test]
    fn tokens_keep_hyphens_and_apostrophes_inside_words() {
        let words = |text: &str| tokens(text).into_iter().map(|t| t.unwrap_or_else(|| "|".into())).collect::<Vec<_>>();
        assert_eq!(words("Sell-off: BTC won't hold $1,000.5"), ["sell-off", "|", "btc", "won't", "hold", "1,000.5"]);
        assert_eq!(words("Bitcoin’s rally - U.S. S&P 500"), ["bitcoin", "rally", "|", "u.s", "|", "s&p", "500"]);
    }

    #[test]
    fn the_lists_are_consistent() {
        let mut seen = HashSet::new();
        let lists = [POSITIVE, NEGATIVE, NEUTRAL, NEGATE, NEUTRALISE];
        let generated: Vec<String> = change_phrases().into_iter().map(|(p, _)| p).collect();
        let all = lists.iter().flat_map(|l| l.iter().copied()).chain(generated.iter().map(String::as_str));
        for phrase in all {
            assert!(seen.insert(phrase), "`{phrase}` is listed twice");
            for word in phrase.split(' ').filter(|w| *w != "...") {
                assert_eq!(tokens(word), [Some(word.to_string())], "`{word}` in `{phrase}` is not one lowercase token");
            }
        }
        let mut single = HashSet::new();
        for word in UP.iter().chain(UP_PAIR_ONLY).chain(DOWN).chain(DOWN_PAIR_ONLY).chain(MEASURES.iter().map(|m| &m.0))
        {
            assert!(single.insert(*word), "`{word}` is a direction word or measure twice");
            assert!(!seen.contains(word), "`{word}` is a direction word or measure and also listed as a word");
            assert_eq!(tokens(word), [Some(word.to_string())]);
        }
    }

    #[test]
    fn synthetic_news_scores_with_its_planted_sign() {
        let events = crate::market::synth::news_events(3, 30 * 1440, 12.0);
        assert!(events.len() > 300);
        for event in &events {
            let (title, body, _) = crate::news::synth_news::render(event, 3);
            let planted = sign(event.sentiment);
            assert_eq!(sign(sentiment(&title)), planted, "{title}: {:?}", matches(&title));
            assert_eq!(sign(sentiment(&body)), planted, "{body}: {:?}", matches(&body));
        }
    }

    /// Accuracy and macro-F1 from a confusion matrix (rows: label, columns: prediction).
    fn accuracy_and_macro_f1(confusion: &[[usize; 3]; 3]) -> (f64, f64) {
        let total: usize = confusion.iter().flatten().sum();
        let correct: usize = (0..3).map(|c| confusion[c][c]).sum();
        let f1 = |c: usize| {
            let predicted: usize = (0..3).map(|r| confusion[r][c]).sum();
            let actual: usize = confusion[c].iter().sum();
            if confusion[c][c] == 0 { 0.0 } else { 2.0 * confusion[c][c] as f64 / (predicted + actual) as f64 }
        };
        (correct as f64 / total as f64, (0..3).map(f1).sum::<f64>() / 3.0)
    }

    const CLASSES: [&str; 3] = ["positive", "negative", "neutral"];

    /// One row of testdata/sentiment_check.tsv (a check, not a source for the lists: see its
    /// header): its section, its label (an index into [`CLASSES`]) and its text, or for a real
    /// title a reference into the real-data folder (`ref:...`).
    struct CheckRow {
        section: &'static str,
        label: usize,
        text: &'static str,
    }

    fn check_rows() -> Vec<CheckRow> {
        let mut section = "";
        let mut rows = Vec::new();
        for line in include_str!("testdata/sentiment_check.tsv").lines() {
            if let Some(name) = line.strip_prefix("# section:") {
                section = name.trim();
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (label, text) = line.split_once('\t').expect("label<TAB>text");
            let label = CLASSES.iter().position(|c| *c == label).expect("a known label");
            // The real titles' licence keeps them out of the repository: only references.
            assert_eq!(text.starts_with("ref:"), section != "written", "section `{section}`: {line}");
            rows.push(CheckRow { section, label, text });
        }
        rows
    }

    /// The text a check-set reference points at, under the real-data folder `data` (the
    /// reference format is in the check set's header): `ref:<path>#row=N` is column `title` of
    /// the N-th data record (1-based) of a tab-separated file with a header line, `ref:<glob>`
    /// the front-matter `title` of the one Markdown item the pattern matches. `tables` caches
    /// the title columns of the delimited files read so far.
    fn resolve(
        data: &std::path::Path,
        reference: &str,
        tables: &mut HashMap<std::path::PathBuf, Vec<Option<String>>>,
    ) -> Result<String, String> {
        let spec = reference.strip_prefix("ref:").ok_or("not a `ref:`")?;
        let title_of = |df: &polars::prelude::DataFrame| -> Result<Vec<Option<String>>, String> {
            let column = df.column("title").map_err(|e| e.to_string())?;
            let titles = column.as_materialized_series().str().map_err(|e| e.to_string())?;
            Ok(titles.iter().map(|t| t.map(str::to_string)).collect())
        };
        if let Some((path, row)) = spec.split_once("#row=") {
            let row: usize = row.parse().map_err(|_| format!("`{row}` is not a row number"))?;
            let path = data.join(path);
            if !tables.contains_key(&path) {
                let df = crate::read::read_csv_as_text(&path, true, b'\t').map_err(|e| format!("{e:#}"))?;
                tables.insert(path.clone(), title_of(&df)?);
            }
            let titles = &tables[&path];
            let title = row
                .checked_sub(1)
                .and_then(|i| titles.get(i))
                .ok_or_else(|| format!("no data row {row} in {} (rows 1..={})", path.display(), titles.len()))?;
            title.clone().ok_or_else(|| format!("data row {row} of {} has no title", path.display()))
        } else {
            let pattern = format!("{}/{spec}", glob::Pattern::escape(&data.to_string_lossy()));
            let files: Vec<_> = glob::glob(&pattern)
                .map_err(|e| e.to_string())?
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let [file] = files.as_slice() else {
                return Err(format!("{pattern} matches {} files, not one", files.len()));
            };
            let df = crate::read::read_markdown_item(file).map_err(|e| format!("{e:#}"))?;
            title_of(&df)?.into_iter().next().flatten().ok_or_else(|| format!("{} has no title", file.display()))
        }
    }

    /// Prints the confusion matrix of `rows` (label, text) and asserts accuracy and macro-F1
    /// clearly above always answering "neutral" on the same rows.
    fn assert_beats_always_neutral(name: &str, rows: &[(usize, &str)]) {
        let (mut confusion, mut neutral) = ([[0usize; 3]; 3], [[0usize; 3]; 3]);
        for &(label, text) in rows {
            let predicted = match sign(sentiment(text)) {
                1 => 0,
                -1 => 1,
                _ => 2,
            };
            confusion[label][predicted] += 1;
            neutral[label][2] += 1;
        }
        let (accuracy, f1) = accuracy_and_macro_f1(&confusion);
        let (base_accuracy, base_f1) = accuracy_and_macro_f1(&neutral);
        let n = rows.len();
        let zero: usize = confusion.iter().map(|row| row[2]).sum();
        // One eprint!, so that tests running in parallel do not interleave the lines.
        let mut report = format!("{name} ({n} sentences; rows: label, columns: predicted positive/negative/neutral)\n");
        for (c, row) in CLASSES.iter().zip(&confusion) {
            report += &format!("  {c:>8} {row:?}\n");
        }
        report += &format!(
            "  accuracy {accuracy:.3} (always neutral {base_accuracy:.3}), macro-F1 {f1:.3} (always neutral {base_f1:.3}), scored 0: {:.3}\n",
            zero as f64 / n as f64
        );
        eprint!("{report}");
        assert!(accuracy > base_accuracy + 0.15, "{name}: accuracy {accuracy:.3} vs {base_accuracy:.3}");
        assert!(f1 > base_f1 + 0.25, "{name}: macro-F1 {f1:.3} vs {base_f1:.3}");
    }

    /// The written sentences of the check set, always (they live in the file).
    #[test]
    fn the_written_sentences_beat_always_neutral() {
        let rows = check_rows();
        let written: Vec<(usize, &str)> =
            rows.iter().filter(|r| r.section == "written").map(|r| (r.label, r.text)).collect();
        assert!(written.len() >= 90, "{} written sentences", written.len());
        assert!(rows.len() - written.len() >= 150, "{} real titles", rows.len() - written.len());
        assert_beats_always_neutral("written sentences", &written);
    }

    /// The real titles of the check set, resolved from the real-data folder in
    /// `PIPELINE_REAL_DATA` (they are referenced, not copied: see the file's header), alone and
    /// with the written sentences. Skipped with a printed reason when it is unset, unless
    /// `PIPELINE_REQUIRE_OPTIONAL` says the real-data tests must run.
    #[test]
    fn the_check_set_beats_always_neutral() {
        let Some(data) = std::env::var_os("PIPELINE_REAL_DATA").map(std::path::PathBuf::from) else {
            assert!(
                std::env::var_os("PIPELINE_REQUIRE_OPTIONAL").is_none(),
                "PIPELINE_REAL_DATA is not set, and PIPELINE_REQUIRE_OPTIONAL says the real-data tests must run"
            );
            eprintln!(
                "skipped: PIPELINE_REAL_DATA is not set: the check set's real titles are references into it (point it at shared/data)"
            );
            return;
        };
        assert!(data.join("README.md").is_file(), "PIPELINE_REAL_DATA={} holds no README.md", data.display());
        let rows = check_rows();
        let mut tables = HashMap::new();
        let mut unresolved = Vec::new();
        let mut real: Vec<(usize, String)> = Vec::new();
        for row in rows.iter().filter(|r| r.section != "written") {
            match resolve(&data, row.text, &mut tables) {
                Ok(title) => real.push((row.label, title)),
                Err(why) => unresolved.push(format!("{}: {why}", row.text)),
            }
        }
        assert!(unresolved.is_empty(), "unresolved check-set references:\n{}", unresolved.join("\n"));
        let real: Vec<(usize, &str)> = real.iter().map(|(label, title)| (*label, title.as_str())).collect();
        let written = rows.iter().filter(|r| r.section == "written").map(|r| (r.label, r.text));
        let all: Vec<(usize, &str)> = real.iter().copied().chain(written).collect();
        assert_beats_always_neutral("all", &all);
        assert_beats_always_neutral("real titles", &real);
    }
}
