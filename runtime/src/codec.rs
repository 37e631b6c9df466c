//! The wire format: the one module that knows bincode.
//!
//! A stream carries length-delimited frames: a 4-byte little-endian body
//! length, then the body. The first frame on a connection's stream is a
//! [`Hello`]; every later frame is an envelope: an [`EnvelopeHeader`]
//! followed by the message payload, both bincode (2.0.1, standard
//! configuration).
//!
//! Everything here decodes input from peers that may be broken or hostile,
//! so every decode is bounded three ways: the length prefix is checked
//! against the frame cap before any body byte is buffered, decoding only
//! ever reads from a slice already in memory, and bincode runs with
//! [`DECODE_ALLOCATION_LIMIT`], so a few bytes claiming a terabyte-long
//! string are an error instead of an allocation that aborts the process.
//! Swapping the format (postcard is the candidate) touches this file only.

use std::net::SocketAddr;

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::upid::Incarnation;

/// The protocol version, carried in the connection's ALPN. Nodes speaking
/// different versions refuse each other during the TLS handshake.
pub const PROTOCOL_VERSION: u32 = 2;

/// Frame cap used when a node is not configured otherwise.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 << 20;

/// Highest frame cap a node may be configured with.
pub const MAX_FRAME_BYTES_LIMIT: usize = 16 << 20;

/// Most bytes bincode may claim for allocations while decoding one frame.
/// Larger than the biggest frame because a varint-encoded collection can
/// claim more memory than it occupies on the wire (a `Vec<u64>` of ones
/// takes a byte per element on the wire and eight in memory).
pub const DECODE_ALLOCATION_LIMIT: usize = 8 * MAX_FRAME_BYTES_LIMIT;

const LENGTH_PREFIX_BYTES: usize = 4;

type WireConfig = Configuration<LittleEndian, Varint, Limit<DECODE_ALLOCATION_LIMIT>>;

fn wire_config() -> WireConfig {
    bincode::config::standard().with_limit::<DECODE_ALLOCATION_LIMIT>()
}

/// The ALPN protocol name for a protocol version: `strata/<version>`.
pub fn alpn(version: u32) -> Vec<u8> {
    format!("strata/{version}").into_bytes()
}

/// Why bytes could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the {max}-byte frame cap")]
    FrameTooLarge { len: usize, max: usize },
    #[error("stream ended inside a frame ({have} of {need} bytes received)")]
    Truncated { have: usize, need: usize },
    #[error("empty frame")]
    EmptyFrame,
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{count} unexpected bytes after the {what}")]
    TrailingBytes { what: &'static str, count: usize },
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// The first frame each side writes on a connection's stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    /// The address the sending node listens on and names itself by.
    pub listen: SocketAddr,
    /// The sending node's current incarnation.
    pub incarnation: Incarnation,
}

/// What precedes each message: which local process it is for, which
/// process on the peer node sent it, and the incarnation of this node the
/// sender believed it was talking to. Borrowed both ways: encoding needs no
/// copies of the ids and decoding reads them in place.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnvelopeHeader<'a> {
    pub to: &'a str,
    pub from: &'a str,
    pub to_incarnation: Incarnation,
}

fn malformed(what: &'static str, error: impl std::fmt::Display) -> CodecError {
    CodecError::Malformed {
        what,
        reason: error.to_string(),
    }
}

/// Encodes one value on its own, as message payloads are.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, wire_config())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a value that must fill `bytes` exactly.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, wire_config()).map_err(|e| malformed(what, e))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            what,
            count: bytes.len() - used,
        });
    }
    Ok(value)
}

/// Builds a whole frame (length prefix included) from parts, refusing one
/// over `max_frame_bytes` so the peer never has to. The parts are sized
/// first, so an oversized message is refused before it is encoded and the
/// frame is written once into a buffer of exactly its size.
fn frame(parts: &[&dyn ErasedSerialize], max_frame_bytes: usize) -> Result<Bytes, CodecError> {
    let mut len = 0;
    for part in parts {
        len += part.encoded_len()?;
    }
    let too_large = CodecError::FrameTooLarge {
        len,
        max: max_frame_bytes,
    };
    if len > max_frame_bytes {
        return Err(too_large);
    }
    let prefix = u32::try_from(len).map_err(|_| too_large)?;
    let mut buf = Vec::with_capacity(LENGTH_PREFIX_BYTES + len);
    buf.extend_from_slice(&prefix.to_le_bytes());
    for part in parts {
        part.encode_into(&mut buf)?;
    }
    debug_assert_eq!(buf.len(), LENGTH_PREFIX_BYTES + len);
    Ok(Bytes::from(buf))
}

/// Counts what would be written.
struct LengthCounter(usize);

impl std::io::Write for LengthCounter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Object-safe serialisation into a buffer, so [`frame`] can take parts of
/// different types.
trait ErasedSerialize {
    fn encoded_len(&self) -> Result<usize, CodecError>;
    fn encode_into(&self, buf: &mut Vec<u8>) -> Result<(), CodecError>;
}

impl<T: Serialize> ErasedSerialize for T {
    fn encoded_len(&self) -> Result<usize, CodecError> {
        let mut counter = LengthCounter(0);
        bincode::serde::encode_into_std_write(self, &mut counter, wire_config())
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        Ok(counter.0)
    }

    fn encode_into(&self, buf: &mut Vec<u8>) -> Result<(), CodecError> {
        bincode::serde::encode_into_std_write(self, buf, wire_config())
            .map(|_| ())
            .map_err(|e| CodecError::Encode(e.to_string()))
    }
}

/// A complete hello frame.
pub fn hello_frame(hello: &Hello) -> Result<Bytes, CodecError> {
    frame(&[hello], DEFAULT_MAX_FRAME_BYTES)
}

/// A complete envelope frame for `message`.
pub fn envelope_frame<M: Serialize>(
    header: &EnvelopeHeader<'_>,
    message: &M,
    max_frame_bytes: usize,
) -> Result<Bytes, CodecError> {
    frame(&[header, message], max_frame_bytes)
}

/// A complete frame holding just `message`, for local streams that carry
/// one kind of message (the agent's task launcher).
pub fn message_frame<M: Serialize>(
    message: &M,
    max_frame_bytes: usize,
) -> Result<Bytes, CodecError> {
    frame(&[message], max_frame_bytes)
}

/// Opaque bytes in a message (framework messages, benchmark payloads):
/// encoded as a length and the bytes in one piece, where a plain `Vec<u8>`
/// would go through serde one element at a time.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Blob(pub Vec<u8>);

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Blob, D::Error> {
        struct BlobVisitor;
        impl<'de> serde::de::Visitor<'de> for BlobVisitor {
            type Value = Blob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Blob, E> {
                Ok(Blob(bytes.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(bytes))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Blob, A::Error> {
                // Formats that write bytes as a sequence (JSON) read back here.
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(byte) = seq.next_element()? {
                    bytes.push(byte);
                }
                Ok(Blob(bytes))
            }
        }
        deserializer.deserialize_byte_buf(BlobVisitor)
    }
}

/// Decodes a hello frame's body.
pub fn decode_hello(body: &[u8]) -> Result<Hello, CodecError> {
    decode("hello", body)
}

/// Splits an envelope frame's body into its header and the payload bytes,
/// without copying the payload.
pub fn decode_envelope(body: &[u8]) -> Result<(EnvelopeHeader<'_>, &[u8]), CodecError> {
    let (header, used) = bincode::serde::borrow_decode_from_slice(body, wire_config())
        .map_err(|e| malformed("envelope header", e))?;
    Ok((header, &body[used..]))
}

/// Cuts a byte stream into frames, checking each length prefix against the
/// frame cap before buffering the body it announces.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
    buf: BytesMut,
}

impl FrameDecoder {
    pub fn new(max_frame_bytes: usize) -> FrameDecoder {
        FrameDecoder {
            max_frame_bytes,
            buf: BytesMut::new(),
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame body, `None` if more bytes are needed, or an
    /// error after which the stream must be abandoned. A length over the cap
    /// is refused as soon as its four bytes arrive, so a hostile peer cannot
    /// make the node buffer the body it announces.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, CodecError> {
        if self.buf.len() < LENGTH_PREFIX_BYTES {
            return Ok(None);
        }
        let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
        prefix.copy_from_slice(&self.buf[..LENGTH_PREFIX_BYTES]);
        let len = u32::from_le_bytes(prefix) as usize;
        if len > self.max_frame_bytes {
            return Err(CodecError::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        if len == 0 {
            return Err(CodecError::EmptyFrame);
        }
        if self.buf.len() < LENGTH_PREFIX_BYTES + len {
            // Reserve now so the rest of the body lands without regrowing;
            // bounded by the cap checked above.
            self.buf.reserve(LENGTH_PREFIX_BYTES + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(LENGTH_PREFIX_BYTES);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Called when the stream ends: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let need = if self.buf.len() >= LENGTH_PREFIX_BYTES {
            let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
            prefix.copy_from_slice(&self.buf[..LENGTH_PREFIX_BYTES]);
            LENGTH_PREFIX_BYTES + u32::from_le_bytes(prefix) as usize
        } else {
            LENGTH_PREFIX_BYTES
        };
        Err(CodecError::Truncated {
            have: self.buf.len(),
            need,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bincode varint claiming a 2^40-byte (1 TiB) string: marker 0xFD,
    /// then the length as a little-endian u64. Nine bytes. With bincode's
    /// default configuration this aborts the process on allocation.
    const ONE_TIB_STRING: [u8; 9] = [0xFD, 0, 0, 0, 0, 0, 1, 0, 0];

    #[test]
    fn huge_string_claim_is_an_error_not_an_abort() {
        let result = decode::<String>("payload", &ONE_TIB_STRING);
        assert!(
            matches!(result, Err(CodecError::Malformed { .. })),
            "{result:?}"
        );
        let result = decode_envelope(&ONE_TIB_STRING);
        assert!(result.is_err(), "{result:?}");
        let result = decode::<Vec<u64>>("payload", &ONE_TIB_STRING);
        assert!(result.is_err(), "{result:?}");
    }

    #[test]
    fn envelope_round_trip() {
        let header = EnvelopeHeader {
            to: "master",
            from: "agent-1",
            to_incarnation: Incarnation(9),
        };
        let message = (42u32, "hello".to_string());
        let bytes = envelope_frame(&header, &message, DEFAULT_MAX_FRAME_BYTES).unwrap();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
        // Byte by byte, to exercise every partial state.
        let mut frames = Vec::new();
        for byte in bytes.iter() {
            decoder.push(&[*byte]);
            while let Some(frame) = decoder.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        decoder.finish().unwrap();
        assert_eq!(frames.len(), 1);
        let (decoded_header, payload) = decode_envelope(&frames[0]).unwrap();
        assert_eq!(decoded_header, header);
        assert_eq!(
            decode::<(u32, String)>("payload", payload).unwrap(),
            message
        );
    }

    #[test]
    fn oversized_length_prefix_is_refused_before_buffering() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&u32::MAX.to_le_bytes());
        assert_eq!(
            decoder.next_frame(),
            Err(CodecError::FrameTooLarge {
                len: u32::MAX as usize,
                max: 1024
            })
        );
        assert!(decoder.buf.capacity() < 1024);
    }

    #[test]
    fn truncated_and_empty_frames() {
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&[10, 0, 0, 0, 1, 2, 3]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(
            decoder.finish(),
            Err(CodecError::Truncated { have: 7, need: 14 })
        );
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&[0, 0, 0, 0]);
        assert_eq!(decoder.next_frame(), Err(CodecError::EmptyFrame));
    }

    #[test]
    fn sender_refuses_frames_over_the_cap() {
        let header = EnvelopeHeader {
            to: "a",
            from: "b",
            to_incarnation: Incarnation::ANY,
        };
        let result = envelope_frame(&header, &vec![7u8; 2048], 1024);
        assert!(matches!(
            result,
            Err(CodecError::FrameTooLarge { max: 1024, .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut bytes = encode(&5u32).unwrap();
        bytes.push(0);
        assert_eq!(
            decode::<u32>("payload", &bytes),
            Err(CodecError::TrailingBytes {
                what: "payload",
                count: 1
            })
        );
    }

    #[test]
    fn blobs_round_trip_and_respect_the_limit() {
        let blob = Blob(vec![7; 1000]);
        let bytes = encode(&blob).unwrap();
        assert!(
            bytes.len() <= 1003,
            "one length and the bytes, got {}",
            bytes.len()
        );
        assert_eq!(decode::<Blob>("payload", &bytes).unwrap(), blob);
        assert!(decode::<Blob>("payload", &ONE_TIB_STRING).is_err());
    }

    #[test]
    fn garbage_does_not_decode_as_hello() {
        assert!(decode_hello(&[0xFF; 3]).is_err());
        assert!(decode_hello(b"GET / HTTP/1.1\r\n").is_err());
    }
}
