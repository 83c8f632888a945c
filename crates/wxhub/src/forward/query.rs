//! Query strings as WeChat reads them (`application/x-www-form-urlencoded` pairs), and rewriting
//! one parameter while leaving every other byte of the query as the client sent it.

use std::borrow::Cow;

/// The first value of `name` in the raw query `raw`, decoded; `None` when absent or empty (WeChat
/// treats an empty parameter as missing).
pub fn param<'q>(raw: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    form_urlencoded::parse(raw?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
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
