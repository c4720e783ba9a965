//! Parsers for the value syntaxes config files use: `${ENV}` interpolation,
//! durations ("500ms"), sizes ("64MiB") and qualified table names.

use std::time::Duration;

use serde::{de, Deserialize, Deserializer};

/// A duration written as a number with a unit: `250ms`, `1s`, `5m`, `1h`
/// (a bare integer means seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = NumberOrString::deserialize(d)?;
        let text = raw.into_text();
        parse_duration(&text)
            .map(ConfigDuration)
            .map_err(de::Error::custom)
    }
}

/// A byte size: `65536`, `64KiB`, `64MiB`, `1GiB`, `10MB` (decimal units accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = NumberOrString::deserialize(d)?;
        let text = raw.into_text();
        parse_size(&text).map(ByteSize).map_err(de::Error::custom)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrString {
    Int(i64),
    Str(String),
}

impl NumberOrString {
    fn into_text(self) -> String {
        match self {
            NumberOrString::Int(i) => i.to_string(),
            NumberOrString::Str(s) => s,
        }
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("`{text}` is not a duration: expected a whole number and a unit, e.g. \"500ms\", \"2s\", \"5m\"")
    })?;
    let d = match unit.trim() {
        "" | "s" | "sec" | "secs" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "us" => Duration::from_micros(n),
        "m" | "min" | "mins" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => {
            return Err(format!(
                "`{text}` has an unknown duration unit `{other}` (use ms, s, m or h)"
            ))
        }
    };
    Ok(d)
}

pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("`{text}` is not a size: expected a whole number and a unit, e.g. \"64MiB\"")
    })?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "`{text}` has an unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Replaces each `${NAME}` with the value of environment variable NAME.
/// `$${` escapes a literal `${`. `lookup` is injected so tests need no real env.
pub fn interpolate(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("${") {
        if rest[..pos].ends_with('$') {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated `${` (expected `${NAME}`)".to_string())?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable reference"
            ));
        }
        let value =
            lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A table named as `schema.table`; either part may be double-quoted to keep
/// dots, spaces, quotes (doubled) or upper case. Unqualified means `public`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The SQL form, each part quoted: `"public"."orders"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    pub fn parse(text: &str) -> Result<TableName, String> {
        let parts = split_qualified(text)?;
        match parts.as_slice() {
            [name] => Ok(TableName::new("public", name.clone())),
            [schema, name] => Ok(TableName::new(schema.clone(), name.clone())),
            _ => Err(format!(
                "`{text}` is not a table name: expected `table` or `schema.table` (quote parts that contain dots: \"my.schema\".\"t\")"
            )),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let simple = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        if simple(&self.schema) && simple(&self.name) {
            write!(f, "{}.{}", self.schema, self.name)
        } else {
            f.write_str(&self.quoted())
        }
    }
}

/// Quotes a PostgreSQL identifier: wraps in `"` and doubles inner quotes.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes a PostgreSQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn split_qualified(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("`{text}` has an unterminated quote")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if c == '"' || c.is_whitespace() {
                    return Err(format!(
                        "`{text}`: quote names that contain spaces or quotes, e.g. \"my table\""
                    ));
                }
                // Unquoted identifiers fold to lower case, as in SQL.
                part.extend(c.to_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            return Err(format!("`{text}` has an empty name part"));
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => continue,
            Some(c) => return Err(format!("`{text}`: unexpected `{c}` after a quoted name")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unit"));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("64 mebibytes").is_err());
        assert!(parse_size("99999999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn interpolation() {
        let env = |k: &str| (k == "PW").then(|| "s3cr:t".to_string());
        assert_eq!(interpolate("a${PW}b", &env).unwrap(), "as3cr:tb");
        assert_eq!(interpolate("$${PW}", &env).unwrap(), "${PW}");
        assert_eq!(interpolate("plain", &env).unwrap(), "plain");
        assert!(interpolate("${MISSING}", &env)
            .unwrap_err()
            .contains("MISSING is not set"));
        assert!(interpolate("${PW", &env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(interpolate("${a-b}", &env).is_err());
    }

    #[test]
    fn table_names() {
        assert_eq!(
            TableName::parse("orders").unwrap(),
            TableName::new("public", "orders")
        );
        assert_eq!(
            TableName::parse("Shop.Orders").unwrap(),
            TableName::new("shop", "orders")
        );
        let odd = TableName::parse(r#""My.Schema"."we""ird t""#).unwrap();
        assert_eq!(odd, TableName::new("My.Schema", "we\"ird t"));
        assert_eq!(odd.quoted(), r#""My.Schema"."we""ird t""#);
        assert_eq!(odd.to_string(), odd.quoted());
        assert_eq!(
            TableName::new("public", "orders").to_string(),
            "public.orders"
        );
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("my table").is_err());
        assert!(TableName::parse("\"open").is_err());
        assert!(TableName::parse("a.").is_err());
    }
}
