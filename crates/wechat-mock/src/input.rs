//! A request's parameters as WeChat's parsers see them: the query string and, for POST endpoints,
//! the JSON body.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::Query;
use axum::http::{Method, Uri};
use serde_json::{Map, Value};

use crate::endpoint::Endpoint;
use crate::errors::code::{DATA_FORMAT, REQUIRE_POST};

/// A request's parameters: its query string and, for POST endpoints, its JSON body.
pub(crate) struct Input {
    method: Method,
    query: HashMap<String, String>,
    body: Option<Map<String, Value>>,
    peer: Option<IpAddr>,
}

/// A JSON body field, as WeChat's parser sees it.
pub(crate) enum Field<'a> {
    Missing,
    Str(&'a str),
    Bool(bool),
    Other,
}

impl Input {
    /// Parses what `endpoint` reads. A body that is not a JSON object (form-encoded, say) reads
    /// as having no fields, which is why WeChat answers such a `stable_token` call with 41002.
    pub fn new(
        endpoint: Endpoint,
        method: Method,
        uri: &Uri,
        body: &[u8],
        peer: Option<IpAddr>,
    ) -> Input {
        let query = Query::<HashMap<String, String>>::try_from_uri(uri)
            .map(|q| q.0)
            .unwrap_or_default();
        let body = if endpoint.takes_json_body() {
            match serde_json::from_slice(body) {
                Ok(Value::Object(map)) => Some(map),
                _ => None,
            }
        } else {
            None
        };
        Input {
            method,
            query,
            body,
            peer,
        }
    }

    pub fn peer(&self) -> Option<IpAddr> {
        self.peer
    }

    /// A non-empty query parameter.
    pub fn query(&self, key: &str) -> Option<&str> {
        self.query
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn field(&self, key: &str) -> Field<'_> {
        match self.body.as_ref().and_then(|b| b.get(key)) {
            None | Some(Value::Null) => Field::Missing,
            Some(Value::String(s)) if s.is_empty() => Field::Missing,
            Some(Value::String(s)) => Field::Str(s),
            Some(Value::Bool(b)) => Field::Bool(*b),
            Some(_) => Field::Other,
        }
    }

    /// A non-negative integer body field (`offset`, `count`): `None` when missing, 47001 when of
    /// another type, negative or fractional.
    pub fn body_u64(&self, key: &str) -> Result<Option<u64>, i64> {
        match self.body.as_ref().and_then(|b| b.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or(DATA_FORMAT),
        }
    }

    /// A string body field: `None` when missing, 47001 when of another type.
    pub fn body_str(&self, key: &str) -> Result<Option<&str>, i64> {
        match self.field(key) {
            Field::Missing => Ok(None),
            Field::Str(s) => Ok(Some(s)),
            Field::Bool(_) | Field::Other => Err(DATA_FORMAT),
        }
    }

    /// A parameter accepted in the query string or in the JSON body (the query wins).
    pub fn query_or_body(&self, key: &str) -> Result<Option<&str>, i64> {
        match self.query(key) {
            Some(v) => Ok(Some(v)),
            None => self.body_str(key),
        }
    }

    pub fn require_post(&self) -> Result<(), i64> {
        if self.method == Method::POST {
            Ok(())
        } else {
            Err(REQUIRE_POST)
        }
    }
}
