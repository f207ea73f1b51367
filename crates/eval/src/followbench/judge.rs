//! FollowBench's LLM-judge protocol: the request for one item (its constraint-evolution path
//! and the answer to the last instruction, rendered from `prompts/followbench.toml`) and the
//! strict parser of the judge's reply.
//!
//! Parsing follows the reference: the verdict is on the reply's last line (after code fences
//! are removed and the reply is trimmed). At level 1 the line holds `YES` (satisfied) or else
//! `NO` (not); at level L > 1 it holds a bracketed list of exactly L elements, each `'YES'`
//! (1) or one of `'NO'`, `'PARTIAL'`, `'MAYBE'`, `'UNKNOWN'`, `'N/A'` (0). Tokens are
//! case-sensitive, as in the reference (`'yes'` is not a verdict). Elements may be quoted
//! Python strings or bare tokens. Anything else is a [`ParseError`]: the caller records the
//! item as unparsed and leaves it out of the totals; it is never a score.
//!
//! Not here: deciding which items go to the judge, or the metrics.

use demorecon_judge::PromptSet;
use demorecon_judge::ask::unit_seed;
use demorecon_llm::{ChatRequest, Sampling};
use minijinja::context;

use super::Item;

/// The prompt file's name under `prompts/`.
pub const PROMPT_FILE: &str = "followbench";

/// The judge's reply, parsed: one entry per added constraint, in the order they were added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub satisfied: Vec<bool>,
}

impl Judged {
    /// Every constraint met.
    pub fn hard(&self) -> bool {
        self.satisfied.iter().all(|&s| s)
    }

    /// Constraints met.
    pub fn count(&self) -> usize {
        self.satisfied.iter().filter(|&&s| s).count()
    }
}

/// Why a judge reply gave no verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the reply is empty")]
    Empty,
    #[error("the last line holds neither YES nor NO")]
    NoVerdict,
    #[error("the last line holds no bracketed list")]
    NoList,
    #[error("the last line's list is not a list of strings")]
    NotAList,
    #[error("the list has {got} elements, not {want}")]
    WrongLength { got: usize, want: usize },
    #[error("the list element {0:?} is not YES, NO, PARTIAL, MAYBE, UNKNOWN or N/A")]
    BadElement(String),
}

/// The reply's verdict line: code fences removed (an opening fence with its language tag, and
/// every other triple backtick), the rest trimmed, then its last line, trimmed.
pub fn last_line(reply: &str) -> &str {
    // Fences are removed by skipping them rather than rebuilding the text, so the result
    // borrows from `reply`: find the last line that has text once fences are ignored.
    let mut best = "";
    for line in reply.lines() {
        let bare = strip_fences(line);
        if !bare.is_empty() {
            best = bare;
        }
    }
    best
}

/// One line without its fences: a leading fence (with its language tag when the line is only
/// a fence) and a trailing fence are dropped, then whitespace.
fn strip_fences(line: &str) -> &str {
    let mut s = line.trim();
    if let Some(rest) = s.strip_prefix("```") {
        s = rest;
        // ```python on its own line: the tag is not content.
        if !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || "_+-".contains(c)) {
            return "";
        }
    }
    if let Some(rest) = s.strip_suffix("```") {
        s = rest;
    }
    s.trim()
}

/// Parses a judge reply for an item at `level` (≥ 1).
pub fn parse_reply(reply: &str, level: u32) -> Result<Judged, ParseError> {
    let line = last_line(reply);
    if line.is_empty() {
        return Err(ParseError::Empty);
    }
    if level <= 1 {
        return if line.contains("YES") {
            Ok(Judged {
                satisfied: vec![true],
            })
        } else if line.contains("NO") {
            Ok(Judged {
                satisfied: vec![false],
            })
        } else {
            Err(ParseError::NoVerdict)
        };
    }
    // `re.search(r'\[.*\]', line)`: from the first `[` to the last `]`.
    let (Some(open), Some(close)) = (line.find('['), line.rfind(']')) else {
        return Err(ParseError::NoList);
    };
    if close < open {
        return Err(ParseError::NoList);
    }
    let elements = list_elements(&line[open..=close]).ok_or(ParseError::NotAList)?;
    let want = level as usize;
    if elements.len() != want {
        return Err(ParseError::WrongLength {
            got: elements.len(),
            want,
        });
    }
    let satisfied = elements
        .into_iter()
        .map(|e| match e.as_str() {
            "YES" => Ok(true),
            "NO" | "PARTIAL" | "MAYBE" | "UNKNOWN" | "N/A" => Ok(false),
            _ => Err(ParseError::BadElement(e)),
        })
        .collect::<Result<Vec<bool>, ParseError>>()?;
    Ok(Judged { satisfied })
}

/// The elements of `[…]`: Python string literals, or bare tokens of the verdict vocabulary.
fn list_elements(list: &str) -> Option<Vec<String>> {
    use demorecon_checks::followbench::{PyStrings, parse_py_strings};
    if let Some(PyStrings::List(items)) = parse_py_strings(list) {
        return Some(items);
    }
    let inner = list.strip_prefix('[')?.strip_suffix(']')?;
    if inner.contains(['[', ']', '\'', '"']) {
        return None;
    }
    let mut items: Vec<String> = inner.split(',').map(|s| s.trim().to_owned()).collect();
    if items.last().is_some_and(String::is_empty) && items.len() > 1 {
        items.pop();
    }
    if items.len() == 1 && items[0].is_empty() {
        return Some(Vec::new());
    }
    items.iter().all(|s| !s.is_empty()).then_some(items)
}

/// Which template of the prompt file: the normal one, or the stricter re-ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    Judge,
    Strict,
}

impl Template {
    pub fn name(self) -> &'static str {
        match self {
            Template::Judge => "judge",
            Template::Strict => "strict",
        }
    }
}

/// The judge request for `item` (which must have its evolution path) answered by `answer`.
pub fn request(
    prompts: &PromptSet,
    template: Template,
    item: &Item,
    answer: &str,
    max_tokens: u32,
) -> Result<ChatRequest, demorecon_judge::PromptError> {
    let (initial, steps) = item
        .evolution
        .split_first()
        .map(|(first, rest)| (first.as_str(), rest))
        .unwrap_or(("", &[]));
    let messages = prompts.render(
        PROMPT_FILE,
        template.name(),
        context! {
            constraint_type => &item.constraint_type,
            level => item.level,
            initial => initial,
            steps => steps,
            answer => answer,
        },
    )?;
    let mut req = ChatRequest::new(messages);
    req.sampling = Sampling {
        temperature: 0.0,
        max_tokens,
        seed: unit_seed(&item.id, &format!("followbench/{}", template.name())),
        ..Sampling::default()
    };
    req.prompt_version = Some(prompts.version(PROMPT_FILE).to_owned());
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(reply: &str, level: u32) -> Vec<bool> {
        parse_reply(reply, level)
            .unwrap_or_else(|e| panic!("{reply:?}: {e}"))
            .satisfied
    }

    fn err(reply: &str, level: u32) -> ParseError {
        parse_reply(reply, level).unwrap_err()
    }

    #[test]
    fn the_verdict_is_on_the_last_line() {
        assert_eq!(
            ok("1) The constraint is X: NO.\n2) ...\n['YES']", 1),
            [true]
        );
        assert_eq!(ok("Reasoning mentions YES.\n['NO']\n\n  ", 1), [false]);
        assert_eq!(last_line("a\nb  \n\n"), "b");
        assert_eq!(last_line(""), "");
        assert_eq!(err("", 1), ParseError::Empty);
        assert_eq!(err(" \n\t\n", 3), ParseError::Empty);
    }

    #[test]
    fn code_fences_are_removed() {
        assert_eq!(
            ok("Analysis...\n```python\n['YES', 'NO']\n```", 2),
            [true, false]
        );
        assert_eq!(
            ok("Analysis...\n```\n['NO', 'NO']\n```\n", 2),
            [false, false]
        );
        assert_eq!(ok("```['YES', 'YES']```", 2), [true, true]);
        assert_eq!(ok("x\n```python\n['YES']\n```", 1), [true]);
        assert_eq!(last_line("```json\n[\"YES\"]\n```"), "[\"YES\"]");
        // A fence line that carries more than a language tag keeps its text.
        assert_eq!(last_line("```YES```"), "YES");
    }

    #[test]
    fn level_one_looks_for_yes_then_no() {
        assert_eq!(ok("['YES']", 1), [true]);
        assert_eq!(ok("YES", 1), [true]);
        assert_eq!(ok("['NO']", 1), [false]);
        assert_eq!(
            ok("NOT satisfied", 1),
            [false],
            "'NO' inside NOT counts, as in the reference"
        );
        assert_eq!(ok("YES or NO? NO", 1), [true], "YES wins when both occur");
        assert_eq!(err("['yes']", 1), ParseError::NoVerdict, "case-sensitive");
        assert_eq!(err("The answer satisfies it.", 1), ParseError::NoVerdict);
    }

    #[test]
    fn lists_need_exactly_level_elements() {
        assert_eq!(ok("['YES', 'NO', 'YES']", 3), [true, false, true]);
        assert_eq!(ok("Final: [\"YES\", \"YES\"]", 2), [true, true]);
        assert_eq!(ok("[YES, NO]", 2), [true, false], "bare tokens");
        assert_eq!(ok("['YES', 'NO',]", 2), [true, false]);
        assert_eq!(
            err("['YES', 'NO']", 3),
            ParseError::WrongLength { got: 2, want: 3 }
        );
        assert_eq!(
            err("['YES', 'NO', 'NO', 'NO']", 3),
            ParseError::WrongLength { got: 4, want: 3 }
        );
        assert_eq!(err("[]", 2), ParseError::WrongLength { got: 0, want: 2 });
    }

    #[test]
    fn each_token_kind() {
        assert_eq!(
            ok("['YES', 'NO', 'PARTIAL', 'MAYBE', 'UNKNOWN', 'N/A']", 6),
            [true, false, false, false, false, false]
        );
        let j = parse_reply("['YES', 'PARTIAL', 'YES']", 3).unwrap();
        assert!(!j.hard());
        assert_eq!(j.count(), 2);
        assert!(parse_reply("['YES', 'YES']", 2).unwrap().hard());
        assert_eq!(
            err("['YES', 'yes']", 2),
            ParseError::BadElement("yes".into()),
            "lowercase is not a verdict"
        );
        assert_eq!(err("['YES', 'No']", 2), ParseError::BadElement("No".into()));
        assert_eq!(
            err("['YES', ' NO']", 2),
            ParseError::BadElement(" NO".into())
        );
        assert_eq!(
            err("['YES', 'SOMEWHAT']", 2),
            ParseError::BadElement("SOMEWHAT".into())
        );
    }

    #[test]
    fn replies_without_a_usable_list() {
        assert_eq!(err("YES, NO", 2), ParseError::NoList);
        assert_eq!(err("]YES, NO[", 2), ParseError::NoList);
        assert_eq!(
            err("The list is in my analysis above.", 2),
            ParseError::NoList
        );
        assert_eq!(err("['YES', 'NO'] [done]", 2), ParseError::NotAList);
        assert_eq!(err("[['YES', 'NO']]", 2), ParseError::NotAList);
        assert_eq!(err("['YES', 'NO]", 2), ParseError::NotAList);
        // The list must be on the last line.
        assert_eq!(
            err("['YES', 'NO']\nThat is my verdict.", 2),
            ParseError::NoList
        );
    }
}
