//! Query strings as WeChat reads them (`application/x-www-form-urlencoded` pairs), and rewriting
//! one parameter while leaving every other byte of the query as the client sent it.
//!
//! Every pass-through call looks for its token parameter, so reading a query costs one scan of
//! its bytes: a key or value is decoded (and copied) only when it has something to decode, and a
//! value only when its key is the one looked for.

use std::borrow::Cow;

/// One `key=value` pair of a raw query, neither part decoded yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair<'q> {
    /// The whole pair as sent.
    raw: &'q str,
    /// Where its key ends (its length when there is no `=`).
    split: usize,
}

impl<'q> Pair<'q> {
    /// The key, decoded.
    pub fn key(&self) -> Cow<'q, str> {
        let key = &self.raw[..self.split];
        if is_plain(key) {
            return Cow::Borrowed(key);
        }
        decoded(self.raw).0
    }

    /// The value, decoded (empty when the pair has no `=`).
    pub fn value(&self) -> Cow<'q, str> {
        let value = self.raw.get(self.split + 1..).unwrap_or_default();
        if is_plain(value) {
            return Cow::Borrowed(value);
        }
        decoded(self.raw).1
    }
}

/// Whether `part` reads the same decoded (no `%` escape, no `+` for a space).
fn is_plain(part: &str) -> bool {
    memchr::memchr2(b'%', b'+', part.as_bytes()).is_none()
}

/// A pair decoded as `form_urlencoded` decodes it.
fn decoded(pair: &str) -> (Cow<'_, str>, Cow<'_, str>) {
    form_urlencoded::parse(pair.as_bytes())
        .next()
        .unwrap_or_default()
}

/// The pairs of the raw query `raw`, in order, empty ones (`a=1&&b=2`) skipped, as
/// `form_urlencoded::parse` yields them.
pub fn pairs(raw: &str) -> impl Iterator<Item = Pair<'_>> {
    raw.split('&').filter(|p| !p.is_empty()).map(|raw| Pair {
        raw,
        split: raw.find('=').unwrap_or(raw.len()),
    })
}

/// The first value of `name` in the raw query `raw`, decoded; `None` when absent or empty (WeChat
/// treats an empty parameter as missing).
pub fn param<'q>(raw: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    pairs(raw?)
        .find(|pair| pair.key() == name)
        .map(|pair| pair.value())
        .filter(|value| !value.is_empty())
}

/// `raw` with every `name=` pair replaced by `name=<value>` (added at the end if absent). The other
/// pairs keep their exact encoding.
pub fn replace(raw: Option<&str>, name: &str, value: &str) -> String {
    let encoded: String = form_urlencoded::Serializer::new(String::new())
        .append_pair(name, value)
        .finish();
    let mut out = String::with_capacity(raw.map_or(0, str::len) + encoded.len() + 1);
    let mut replaced = false;
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let is_name = form_urlencoded::parse(key.as_bytes())
            .next()
            .is_some_and(|(k, _)| k == name);
        if !out.is_empty() {
            out.push('&');
        }
        if is_name {
            if replaced {
                // A repeated parameter: drop the extra copies, so WeChat reads only ours.
                out.pop();
                continue;
            }
            out.push_str(&encoded);
            replaced = true;
        } else {
            out.push_str(pair);
        }
    }
    if !replaced {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&encoded);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pairs_as_form_urlencoded_does() {
        for raw in [
            "a=1&b=2",
            "a=1&&b=&c&=d",
            "access%5Ftoken=x%2By+z&tok=a==b",
            "k%FF=v%FFw&x=%zz&y=%",
            "",
            "&&",
            "a+b=c+d",
        ] {
            let ours: Vec<(String, String)> = pairs(raw)
                .map(|p| (p.key().into_owned(), p.value().into_owned()))
                .collect();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(ours, theirs, "{raw}");
        }
        // Nothing to decode: nothing copied.
        let pair = pairs("access_token=T1").next().unwrap();
        assert!(matches!(pair.key(), Cow::Borrowed("access_token")));
        assert!(matches!(pair.value(), Cow::Borrowed("T1")));
    }

    #[test]
    fn reads_the_first_non_empty_value_decoded() {
        let q = Some("a=1&access_token=x%2By&access_token=z&e=");
        assert_eq!(param(q, "access_token").as_deref(), Some("x+y"));
        assert_eq!(param(q, "e"), None);
        assert_eq!(param(q, "missing"), None);
        assert_eq!(param(None, "a"), None);
    }

    #[test]
    fn replaces_one_parameter_and_keeps_the_others_byte_for_byte() {
        assert_eq!(
            replace(Some("x=%7E1&access_token=old&y=a+b"), "access_token", "new"),
            "x=%7E1&access_token=new&y=a+b"
        );
        assert_eq!(
            replace(
                Some("access_token=a&access_token=b&c=1"),
                "access_token",
                "n"
            ),
            "access_token=n&c=1"
        );
        assert_eq!(
            replace(Some("c=1"), "access_token", "n"),
            "c=1&access_token=n"
        );
        assert_eq!(replace(None, "access_token", "n/="), "access_token=n%2F%3D");
        assert_eq!(
            replace(Some("secret=K&appid=wx1"), "secret", "real"),
            "secret=real&appid=wx1"
        );
    }
}
