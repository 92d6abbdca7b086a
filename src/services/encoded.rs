//! Answers that write their own bytes, for the two methods every gateway
//! calls per request: VerifyApiKey and Envoy's Check.
//!
//! Their answers about a valid key are mostly the key's own fields (ids, the
//! endpoint, permissions, metadata, the upstream's headers), the same at
//! every call while the key is cached. tonic's generated servers build each
//! answer as a message of owned strings and encode it; for a key with ten
//! permissions that was a fifth of the call's CPU. Here the key's part is
//! encoded once per cached record (see
//! [`crate::db::models::EncodedAnswers`]) and each call writes those bytes
//! and encodes only what is its own (credits left, a reservation, the
//! headers that carried the key). Protobuf lets a message's fields come in
//! any order and in separate runs, so the bytes decode to the same message.
//!
//! [`AnswerWritten`] serves one method of a generated server this way and
//! passes every other path to the server: the same decoding, limits, and
//! status handling as the generated code, through a codec whose answers are
//! [`WriteAnswer`]s.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use bytes::BufMut;
use futures_util::future::{BoxFuture, Either};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::EncodeError;
use tonic::body::Body;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::Status;
use tonic_prost::ProstDecoder;

use super::Rpc;

/// An answer that writes its own encoding.
pub trait WriteAnswer: Send + 'static {
    /// Fails only when `buf` cannot grow.
    fn write(self, buf: &mut impl BufMut) -> Result<(), EncodeError>;

    /// The answer as the message it encodes (for the generated trait's
    /// method, which a server built without [`AnswerWritten`] would call).
    fn into_message<M: prost::Message + Default>(self) -> Result<M, Status>
    where
        Self: Sized,
    {
        let mut buf = Vec::new();
        self.write(&mut buf).map_err(encode_failed)?;
        M::decode(buf.as_slice()).map_err(|error| {
            tracing::error!(%error, "an answer written as bytes does not decode");
            Status::internal("internal error")
        })
    }
}

/// An answer written as bytes, as the message it encodes: what a generated
/// trait's method returns for a method [`AnswerWritten`] serves.
pub fn as_message<A: WriteAnswer, M: prost::Message + Default>(answer: Rpc<A>) -> Rpc<M> {
    let (metadata, answer, extensions) = answer?.into_parts();
    let message = answer.into_message()?;
    Ok(tonic::Response::from_parts(metadata, message, extensions))
}

fn encode_failed(error: EncodeError) -> Status {
    tracing::error!(%error, "an answer could not be encoded");
    Status::internal("internal error")
}

/// A method served with [`WriteAnswer`]s.
pub trait AnsweredMethod: Clone + Send + Sync + 'static {
    type Request: prost::Message + Default + Send + 'static;
    type Answer: WriteAnswer;

    fn call(
        &self,
        request: tonic::Request<Self::Request>,
    ) -> impl Future<Output = Rpc<Self::Answer>> + Send;
}

/// A generated server `S` whose method at `path` is served by `method`.
#[derive(Clone)]
pub struct AnswerWritten<S, M> {
    server: S,
    path: &'static str,
    method: M,
    max_decoding_message_size: usize,
}

impl<S, M> AnswerWritten<S, M> {
    /// `path` is the method's `/package.Service/Method`; requests larger
    /// than `max_decoding_message_size` are refused, as the server's.
    pub fn new(server: S, path: &'static str, method: M, max_decoding_message_size: usize) -> Self {
        Self {
            server,
            path,
            method,
            max_decoding_message_size,
        }
    }
}

impl<S: NamedService, M> NamedService for AnswerWritten<S, M> {
    const NAME: &'static str = S::NAME;
}

impl<S, M, B> tower::Service<http::Request<B>> for AnswerWritten<S, M>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    M: AnsweredMethod,
    B: http_body::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Self::Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.server.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != self.path {
            return Either::Left(self.server.call(request));
        }
        let method = Unary(self.method.clone());
        let max_decoding = self.max_decoding_message_size;
        Either::Right(Box::pin(async move {
            let codec = AnswerCodec::<M::Answer, M::Request>(PhantomData);
            let mut grpc = Grpc::new(codec).apply_max_message_size_config(Some(max_decoding), None);
            Ok(grpc.unary(method, request).await)
        }))
    }
}

/// An [`AnsweredMethod`] as tonic's unary service.
struct Unary<M>(M);

impl<M: AnsweredMethod> UnaryService<M::Request> for Unary<M> {
    type Response = M::Answer;
    type Future = BoxFuture<'static, Rpc<M::Answer>>;

    fn call(&mut self, request: tonic::Request<M::Request>) -> Self::Future {
        let method = self.0.clone();
        Box::pin(async move { method.call(request).await })
    }
}

/// Decodes requests as prost does, and lets answers write themselves.
struct AnswerCodec<A, R>(PhantomData<fn() -> (A, R)>);

impl<A: WriteAnswer, R: prost::Message + Default + Send + 'static> Codec for AnswerCodec<A, R> {
    type Encode = A;
    type Decode = R;
    type Encoder = AnswerEncoder<A>;
    type Decoder = ProstDecoder<R>;

    fn encoder(&mut self) -> Self::Encoder {
        AnswerEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

struct AnswerEncoder<A>(PhantomData<fn() -> A>);

impl<A: WriteAnswer> Encoder for AnswerEncoder<A> {
    type Item = A;
    type Error = Status;

    fn encode(&mut self, item: A, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write(buf).map_err(encode_failed)
    }
}

/// Writes the key of length-delimited field `tag` and its length: `len`
/// bytes of the field must follow.
pub fn put_length_delimited_key(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// Writes field `tag` as a string.
pub fn put_string_field(tag: u32, value: &str, buf: &mut impl BufMut) {
    put_length_delimited_key(tag, value.len(), buf);
    buf.put_slice(value.as_bytes());
}

/// What [`put_string_field`] writes, in bytes.
pub fn string_field_len(tag: u32, value: &str) -> usize {
    key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::proto::VerifyApiKeyResponse;

    #[test]
    fn fields_written_in_separate_runs_decode_as_one_message() {
        let first = VerifyApiKeyResponse {
            valid: true,
            permissions: vec!["chat.write".into()],
            ..Default::default()
        }
        .encode_to_vec();
        let second = VerifyApiKeyResponse {
            credits_remaining: Some(7),
            permissions: vec!["models/*".into()],
            ..Default::default()
        }
        .encode_to_vec();
        let mut buf = first.clone();
        put_string_field(12, "customer-1", &mut buf);
        buf.extend_from_slice(&second);
        assert_eq!(string_field_len(12, "customer-1"), 12);
        let decoded = VerifyApiKeyResponse::decode(buf.as_slice()).unwrap();
        assert!(decoded.valid);
        assert_eq!(decoded.credits_remaining, Some(7));
        assert_eq!(decoded.external_id, "customer-1");
        assert_eq!(decoded.permissions, ["chat.write", "models/*"]);
    }

    #[test]
    fn a_length_delimited_key_carries_its_length() {
        let mut buf = Vec::new();
        put_length_delimited_key(3, 300, &mut buf);
        assert_eq!(buf, [3 << 3 | 2, 0b1010_1100, 0b10]);
    }
}
