//! Typed extractors: `ApiQuery<T>` and `ApiJson<T>` parse a request into the very type its
//! OpenAPI entry documents, and refuse it as problem+json naming every bad field.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::{DeserializeOwned, Visitor};
use serde::Deserializer;

use super::{ApiError, AppState};
use crate::domain::report::FieldError;

/// Query parameters as `T`, a struct of the parameters an operation knows (its
/// `utoipa::IntoParams`). Values are percent-decoded; a parameter given twice keeps its last
/// value; a parameter `T` does not know is refused, each one named.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let params = query_parameters(parts.uri.query().unwrap_or_default())?;
        let known = field_names::<T>();
        let unknown: Vec<FieldError> = params
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| {
                FieldError::new(
                    k.as_str(),
                    format!("unknown parameter; known: {}", known.join(", ")),
                )
            })
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::InvalidParameters(unknown));
        }
        from_parameters(&params).map(ApiQuery)
    }
}

/// A query string's parameters, percent-decoded (`+` is a space), the last of a repeated one kept.
pub(super) fn query_parameters(query: &str) -> Result<BTreeMap<String, String>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .map(|pairs| pairs.into_iter().collect())
        .map_err(|e| {
            ApiError::InvalidParameters(vec![FieldError::new(
                "query",
                format!("Failed to deserialize query string: {e}"),
            )])
        })
}

/// `T` from parameters already split (the API's, the pages' and the CLI's); unknown ones are ignored.
pub fn from_parameters<T: DeserializeOwned>(
    params: &BTreeMap<String, String>,
) -> Result<T, ApiError> {
    // Through the form encoding and back: its deserializer reads text into `Option`s and numbers.
    let refused = |e: &dyn std::fmt::Display| {
        ApiError::InvalidParameters(vec![FieldError::new("query", e.to_string())])
    };
    let encoded = serde_urlencoded::to_string(params).map_err(|e| refused(&e))?;
    serde_urlencoded::from_str::<T>(&encoded).map_err(|e| refused(&e))
}

/// The field names of a struct that serde derives `Deserialize` for (empty for anything else).
fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    // The deserializer below only records the names and fails; the failure is the expected end.
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

/// A deserializer that records the fields a struct asks for and gives nothing.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(serde::de::Error::custom("names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// A JSON request body as `T`: 415 unless the content type is JSON, 413 past
/// `http.max_body_bytes`, 408 when it has not all arrived in time, 400 for JSON that is not
/// well-formed, and 422 (`T`'s [`JsonBody::refuse`]) for JSON that is not a `T`.
pub struct ApiJson<T>(pub T);

/// A request body type: how well-formed JSON that does not deserialize is answered.
pub trait JsonBody: DeserializeOwned {
    /// The answer to well-formed JSON that is not a `Self`: by default 422 on `body`.
    fn refuse(error: serde_json::Error) -> ApiError {
        ApiError::Invalid(vec![FieldError::new("body", error.to_string())])
    }
}

impl<T: JsonBody> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let bytes = super::json_body(
            &parts.headers,
            body,
            state.max_body_bytes,
            state.body_read_timeout,
        )
        .await?;
        let body = serde_json::from_slice(&bytes).map_err(|e| {
            if e.is_data() {
                T::refuse(e)
            } else {
                ApiError::MalformedJson(e.to_string())
            }
        })?;
        // serde reads a struct from an array too (`[null, null]`); a body is an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::Invalid(vec![FieldError::new(
                "body",
                "the body must be a JSON object",
            )]));
        }
        Ok(ApiJson(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Sample {
        service: Option<String>,
        q: Option<String>,
    }

    #[test]
    fn a_query_is_percent_decoded_and_its_struct_fields_are_the_known_names() {
        let params = query_parameters("q=S%C3%A3o+Paulo&service=x&service=y").expect("parses");
        assert_eq!(params["q"], "São Paulo");
        assert_eq!(params["service"], "y");
        assert_eq!(field_names::<Sample>(), ["service", "q"]);
        assert_eq!(
            from_parameters::<Sample>(&params).expect("a sample"),
            Sample {
                service: Some("y".into()),
                q: Some("São Paulo".into())
            }
        );
    }
}
