//! Topic patterns with named placeholders, and templates that use the captured values.
//!
//! Owns [`TopicPattern`] (`sites/{site}/nodes/{node}/up` → MQTT filter `sites/+/nodes/+/up` plus
//! a matcher that extracts `site` and `node` from a received topic) and [`Template`] (a device or
//! point name such as `"{node}"` or `"node-{node}"`, rendered from those captures). It does not
//! subscribe or decode payloads.
//!
//! Matching follows MQTT 3.1.1 §4.7: `+` matches exactly one level, a trailing `#` matches the
//! parent level and any number of levels below it, and a filter starting with a wildcard does not
//! match a topic name starting with `$` (§4.7.2, [MQTT-4.7.2-1]).
//! Matching a topic allocates nothing: captures are slices of the topic.

use std::fmt;

/// Most placeholders a pattern may have. Captures live in a fixed array so that matching a topic
/// on the hot path does not allocate; eight covers any sensible topic hierarchy.
pub const MAX_PLACEHOLDERS: usize = 8;

/// Why a topic pattern or template was refused. Each message names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The pattern is the empty string (MQTT 3.1.1 §4.7.3: topic filters are at least one
    /// character long).
    #[error("the topic is empty")]
    Empty,
    /// A `{` without its `}`.
    #[error("placeholder \"{0}\" is not closed: add a `}}`")]
    Unclosed(String),
    /// A `}` without a `{` before it.
    #[error("\"{0}\" has a `}}` without a `{{`")]
    Unopened(String),
    /// A placeholder that shares its level with other text (`node-{id}`); MQTT wildcards match
    /// whole levels only.
    #[error("placeholder in level \"{0}\" must be the whole level (MQTT wildcards match whole levels), e.g. `a/{{id}}/b`")]
    NotWholeLevel(String),
    /// A placeholder name that is empty or not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("placeholder name \"{0}\" must be letters, digits and `_`, not starting with a digit")]
    BadName(String),
    /// The same placeholder twice.
    #[error("placeholder \"{0}\" appears twice")]
    Duplicate(String),
    /// `+` or `#` inside a level with other characters (`a+`, `x#`): not valid MQTT
    /// (§4.7.1.2, §4.7.1.3).
    #[error("wildcard in level \"{0}\" must be the whole level")]
    WildcardInLevel(String),
    /// `#` that is not the last level (§4.7.1.2).
    #[error("`#` must be the last level")]
    HashNotLast,
    /// More than [`MAX_PLACEHOLDERS`] placeholders.
    #[error("more than {MAX_PLACEHOLDERS} placeholders")]
    TooManyPlaceholders,
    /// U+0000 in a topic (MQTT 3.1.1 §1.5.3: must not appear in a UTF-8 string).
    #[error("the topic contains a NUL character")]
    Nul,
    /// A template names a placeholder the topic pattern does not have.
    #[error("placeholder \"{name}\" is not in the topic; the topic has: {known}")]
    UnknownPlaceholder {
        /// The unknown name.
        name: String,
        /// The topic's placeholder names, comma-separated (or `none`).
        known: String,
    },
    /// A template that renders to nothing.
    #[error("the template is empty")]
    EmptyTemplate,
}

/// One level of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    /// Must equal the topic level.
    Literal(String),
    /// `{name}`: any one level, captured at this index.
    Capture(usize),
    /// `+`: any one level, not captured.
    Any,
    /// Trailing `#`: the parent level and everything below it.
    Rest,
}

/// A subscription topic with named placeholders, parsed once at config load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    /// As written in the config.
    source: String,
    /// The MQTT topic filter to subscribe to.
    filter: String,
    levels: Vec<Level>,
    /// Placeholder names in capture order.
    names: Vec<String>,
}

impl TopicPattern {
    /// Parse `sites/{site}/nodes/{node}/up`, `$dp` or `a/+/b/#`.
    ///
    /// # Errors
    /// A [`TopicError`] naming the problem: an unclosed or partial-level placeholder, a bad or
    /// duplicate name, a wildcard mixed into a level, `#` not last.
    pub fn parse(pattern: &str) -> Result<Self, TopicError> {
        if pattern.is_empty() {
            return Err(TopicError::Empty);
        }
        if pattern.contains('\0') {
            return Err(TopicError::Nul);
        }
        let parts: Vec<&str> = pattern.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        let mut names: Vec<String> = Vec::new();
        let mut filter_levels: Vec<&str> = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = if let Some(open) = part.find('{') {
                let Some(close_rel) = part[open..].find('}') else {
                    return Err(TopicError::Unclosed(part[open..].to_owned()));
                };
                let close = open + close_rel;
                if open != 0 || close != part.len() - 1 {
                    return Err(TopicError::NotWholeLevel((*part).to_owned()));
                }
                let name = &part[1..part.len() - 1];
                check_name(name)?;
                if names.iter().any(|n| n == name) {
                    return Err(TopicError::Duplicate(name.to_owned()));
                }
                if names.len() == MAX_PLACEHOLDERS {
                    return Err(TopicError::TooManyPlaceholders);
                }
                names.push(name.to_owned());
                filter_levels.push("+");
                Level::Capture(names.len() - 1)
            } else if part.contains('}') {
                return Err(TopicError::Unopened((*part).to_owned()));
            } else if *part == "+" {
                filter_levels.push("+");
                Level::Any
            } else if *part == "#" {
                if i != parts.len() - 1 {
                    return Err(TopicError::HashNotLast);
                }
                filter_levels.push("#");
                Level::Rest
            } else if part.contains('+') || part.contains('#') {
                return Err(TopicError::WildcardInLevel((*part).to_owned()));
            } else {
                filter_levels.push(part);
                Level::Literal((*part).to_owned())
            };
            levels.push(level);
        }
        Ok(Self {
            source: pattern.to_owned(),
            filter: filter_levels.join("/"),
            levels,
            names,
        })
    }

    /// The pattern as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The MQTT topic filter to subscribe to (placeholders replaced by `+`).
    #[must_use]
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// Placeholder names, in the order of [`Captures`].
    #[must_use]
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Index of the placeholder `name` in [`Captures`].
    #[must_use]
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Match a received topic name; on success, the placeholder values in order.
    #[must_use]
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Captures<'t>> {
        // [MQTT-4.7.2-1]: a filter starting with a wildcard never matches a `$` topic.
        if topic.starts_with('$')
            && matches!(
                self.levels.first(),
                Some(Level::Any | Level::Capture(_) | Level::Rest)
            )
        {
            return None;
        }
        let mut caps = Captures {
            values: [""; MAX_PLACEHOLDERS],
            len: 0,
        };
        let mut topic_levels = Levels(Some(topic));
        for level in &self.levels {
            match level {
                Level::Rest => return Some(caps),
                Level::Literal(lit) => {
                    if topic_levels.next()? != lit {
                        return None;
                    }
                }
                Level::Any => {
                    topic_levels.next()?;
                }
                Level::Capture(i) => {
                    let value = topic_levels.next()?;
                    // `i < names.len() <= MAX_PLACEHOLDERS` by construction in `parse`.
                    if let Some(slot) = caps.values.get_mut(*i) {
                        *slot = value;
                        caps.len = caps.len.max(*i + 1);
                    }
                }
            }
        }
        if topic_levels.next().is_some() {
            return None;
        }
        Some(caps)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The levels of a topic name (`None` once exhausted). A byte loop rather than `str::split`:
/// topics are short, and the generic splitter's set-up cost showed in profiles of the message
/// path.
struct Levels<'t>(Option<&'t str>);

impl<'t> Iterator for Levels<'t> {
    type Item = &'t str;

    fn next(&mut self) -> Option<&'t str> {
        let rest = self.0?;
        match rest.bytes().position(|b| b == b'/') {
            Some(i) => {
                self.0 = Some(&rest[i + 1..]);
                Some(&rest[..i])
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

/// Placeholder values extracted from one topic, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captures<'t> {
    values: [&'t str; MAX_PLACEHOLDERS],
    len: usize,
}

impl<'t> Captures<'t> {
    /// No captures (for formats and tests that have no topic placeholders).
    #[must_use]
    pub const fn none() -> Self {
        Self {
            values: [""; MAX_PLACEHOLDERS],
            len: 0,
        }
    }

    /// The value of placeholder `index`.
    #[must_use]
    pub fn get(&self, index: usize) -> Option<&'t str> {
        self.as_slice().get(index).copied()
    }

    /// All values, in placeholder order.
    #[must_use]
    pub fn as_slice(&self) -> &[&'t str] {
        self.values.get(..self.len).unwrap_or(&[])
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`, so names read as tag keys and never need escaping.
fn check_name(name: &str) -> Result<(), TopicError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(TopicError::BadName(name.to_owned()))
    }
}

/// One piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Capture(usize),
}

/// A name built from topic captures: `"{node}"`, `"node-{node}"` or a fixed `"gnss-1"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parse `template` against the placeholders of `pattern`.
    ///
    /// # Errors
    /// [`TopicError::UnknownPlaceholder`] for a name the topic does not capture,
    /// [`TopicError::Unclosed`]/[`TopicError::Unopened`] for unbalanced braces,
    /// [`TopicError::EmptyTemplate`] for `""`.
    pub fn parse(template: &str, pattern: &TopicPattern) -> Result<Self, TopicError> {
        if template.is_empty() {
            return Err(TopicError::EmptyTemplate);
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_owned()));
                    rest = "";
                }
                Some(pos) if rest.as_bytes().get(pos) == Some(&b'}') => {
                    return Err(TopicError::Unopened(template.to_owned()));
                }
                Some(open) => {
                    if open > 0 {
                        parts.push(Part::Literal(rest[..open].to_owned()));
                    }
                    let after = &rest[open + 1..];
                    let Some(close) = after.find('}') else {
                        return Err(TopicError::Unclosed(rest[open..].to_owned()));
                    };
                    let name = &after[..close];
                    check_name(name)?;
                    let index =
                        pattern
                            .index_of(name)
                            .ok_or_else(|| TopicError::UnknownPlaceholder {
                                name: name.to_owned(),
                                known: if pattern.names().is_empty() {
                                    "none".to_owned()
                                } else {
                                    pattern.names().join(", ")
                                },
                            })?;
                    parts.push(Part::Capture(index));
                    rest = &after[close + 1..];
                }
            }
        }
        Ok(Self { parts })
    }

    /// A template that is always `name`.
    #[must_use]
    pub fn fixed(name: &str) -> Self {
        Self {
            parts: vec![Part::Literal(name.to_owned())],
        }
    }

    /// The name when the template has no placeholder (`"gnss-1"`), else `None`.
    #[must_use]
    pub fn as_fixed(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Literal(name)] => Some(name),
            _ => None,
        }
    }

    /// A template that is exactly placeholder `index`.
    #[must_use]
    pub fn capture(index: usize) -> Self {
        Self {
            parts: vec![Part::Capture(index)],
        }
    }

    /// Append the rendered name to `out`. A capture missing from `caps` renders as nothing.
    pub fn render_into(&self, caps: &Captures<'_>, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Capture(i) => out.push_str(caps.get(*i).unwrap_or_default()),
            }
        }
    }

    /// The rendered name.
    #[must_use]
    pub fn render(&self, caps: &Captures<'_>) -> String {
        let mut out = String::new();
        self.render_into(caps, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_plus_and_are_captured_in_order() {
        let p = TopicPattern::parse("sites/{site}/nodes/{node}/up").expect("valid");
        assert_eq!(p.filter(), "sites/+/nodes/+/up");
        assert_eq!(p.names(), ["site", "node"]);
        let caps = p.matches("sites/xa/nodes/n7/up").expect("matches");
        assert_eq!(caps.as_slice(), ["xa", "n7"]);
        assert_eq!(caps.get(1), Some("n7"));
        assert_eq!(caps.get(2), None);
    }

    #[test]
    fn literal_levels_and_level_counts_must_agree() {
        let p = TopicPattern::parse("sites/{site}/nodes/{node}/up").expect("valid");
        assert!(p.matches("sites/xa/nodes/n7/down").is_none());
        assert!(p.matches("sites/xa/nodes/n7").is_none());
        assert!(p.matches("sites/xa/nodes/n7/up/extra").is_none());
        // `+` matches an empty level (MQTT 3.1.1 §4.7.1.3 non-normative example `+/+`).
        assert_eq!(
            p.matches("sites//nodes/n7/up").expect("matches").as_slice(),
            ["", "n7"]
        );
    }

    #[test]
    fn trailing_hash_matches_the_parent_and_any_depth_without_capture() {
        let p = TopicPattern::parse("plant/{area}/#").expect("valid");
        assert_eq!(p.filter(), "plant/+/#");
        assert_eq!(p.matches("plant/a1").expect("parent").as_slice(), ["a1"]);
        assert_eq!(
            p.matches("plant/a1/x/y/z").expect("deep").as_slice(),
            ["a1"]
        );
        assert!(p.matches("other/a1/x").is_none());
    }

    #[test]
    fn bare_plus_is_allowed_and_not_captured() {
        let p = TopicPattern::parse("a/+/{id}").expect("valid");
        assert_eq!(p.filter(), "a/+/+");
        assert_eq!(p.matches("a/x/7").expect("matches").as_slice(), ["7"]);
    }

    #[test]
    fn dollar_topics_match_only_literal_first_levels() {
        let dp = TopicPattern::parse("$dp").expect("valid");
        assert_eq!(dp.filter(), "$dp");
        assert!(dp.matches("$dp").is_some());
        assert!(dp.matches("dp").is_none());
        // [MQTT-4.7.2-1]
        assert!(TopicPattern::parse("#")
            .expect("valid")
            .matches("$dp")
            .is_none());
        assert!(TopicPattern::parse("{x}")
            .expect("valid")
            .matches("$dp")
            .is_none());
        assert!(TopicPattern::parse("#")
            .expect("valid")
            .matches("a/b")
            .is_some());
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(TopicPattern::parse(""), Err(TopicError::Empty));
        assert_eq!(
            TopicPattern::parse("sites/{node/up"),
            Err(TopicError::Unclosed("{node".to_owned()))
        );
        assert_eq!(
            TopicPattern::parse("sites/node}/up"),
            Err(TopicError::Unopened("node}".to_owned()))
        );
        assert_eq!(
            TopicPattern::parse("sites/node-{id}/up"),
            Err(TopicError::NotWholeLevel("node-{id}".to_owned()))
        );
        assert_eq!(
            TopicPattern::parse("a/{id}x"),
            Err(TopicError::NotWholeLevel("{id}x".to_owned()))
        );
        assert_eq!(
            TopicPattern::parse("a/{}"),
            Err(TopicError::BadName(String::new()))
        );
        assert_eq!(
            TopicPattern::parse("a/{1x}"),
            Err(TopicError::BadName("1x".to_owned()))
        );
        assert_eq!(
            TopicPattern::parse("{id}/x/{id}"),
            Err(TopicError::Duplicate("id".to_owned()))
        );
        assert_eq!(
            TopicPattern::parse("a/b+/c"),
            Err(TopicError::WildcardInLevel("b+".to_owned()))
        );
        assert_eq!(
            TopicPattern::parse("a/#x"),
            Err(TopicError::WildcardInLevel("#x".to_owned()))
        );
        assert_eq!(TopicPattern::parse("a/#/b"), Err(TopicError::HashNotLast));
        assert_eq!(TopicPattern::parse("a\0b"), Err(TopicError::Nul));
        let nine = "{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}";
        assert_eq!(
            TopicPattern::parse(nine),
            Err(TopicError::TooManyPlaceholders)
        );
        assert_eq!(
            TopicError::Unclosed("{node".to_owned()).to_string(),
            "placeholder \"{node\" is not closed: add a `}`"
        );
    }

    #[test]
    fn templates_render_from_captures() {
        let p = TopicPattern::parse("sites/{site}/nodes/{node}/up").expect("valid");
        let caps = p.matches("sites/xa/nodes/n7/up").expect("matches");
        assert_eq!(
            Template::parse("{node}", &p).expect("valid").render(&caps),
            "n7"
        );
        assert_eq!(
            Template::parse("node-{node}@{site}", &p)
                .expect("valid")
                .render(&caps),
            "node-n7@xa"
        );
        assert_eq!(
            Template::parse("gnss-1", &p).expect("valid").render(&caps),
            "gnss-1"
        );
        assert_eq!(Template::capture(0).render(&caps), "xa");
        assert_eq!(Template::fixed("f").render(&caps), "f");
    }

    #[test]
    fn template_errors_name_the_problem() {
        let p = TopicPattern::parse("sites/{site}/nodes/{node}/up").expect("valid");
        assert_eq!(
            Template::parse("{device}", &p),
            Err(TopicError::UnknownPlaceholder {
                name: "device".to_owned(),
                known: "site, node".to_owned()
            })
        );
        assert_eq!(
            Template::parse("x{node", &p),
            Err(TopicError::Unclosed("{node".to_owned()))
        );
        assert_eq!(
            Template::parse("x}", &p),
            Err(TopicError::Unopened("x}".to_owned()))
        );
        assert_eq!(Template::parse("", &p), Err(TopicError::EmptyTemplate));
        let dp = TopicPattern::parse("$dp").expect("valid");
        assert_eq!(
            Template::parse("{x}", &dp),
            Err(TopicError::UnknownPlaceholder {
                name: "x".to_owned(),
                known: "none".to_owned()
            })
        );
    }
}
