//! Heartbeat 3 (Linux-HA 3.0.x) wire format: the codec that lets a perfplus
//! node exchange packets with real Heartbeat nodes.
//!
//! A Heartbeat message is an ordered list of named fields. Over UDP every
//! message Heartbeat sends is *netstring-framed*; each field is a netstring
//! `<len>:(<type>)<name>=<value>,` whose `len` counts the bytes between `:`
//! and `,`:
//!
//! ```text
//! ###\n                                           start of message
//! 11:(0)t=status,12:(0)st=active,10:(0)dt=1f40,   string fields (type 0)
//! 27:(1)srcuuid=<16 raw bytes>,                    binary field (type 1)
//! 8:(0)seq=8, ... 8:(0)ttl=3,
//! 50:(0)auth=1 b8caaa5a...b49,                    inner HMAC over the classic form
//! %%%\n                                           end of message
//! 42:1 a2bad64c...cf4,                            outer HMAC over "###\n".."%%%\n"
//! ```
//!
//! Heartbeat also accepts *classic framing*: `>>>\n`, one `name=value\n`
//! line per field (binary fields as `(1)name=<base64>\n`), an `auth=` line,
//! `<<<\n`, and no outer netstring.
//!
//! Two HMACs protect a message ([`auth`]):
//! 1. the inner `auth` field, `"<index> <hex>"` = HMAC over the *classic
//!    form* (every field but `auth`, as `name=value\n` / `(1)name=<base64>\n`);
//!    Heartbeat adds it only when every field is a string or binary field;
//! 2. the outer trailing netstring, `"<index> <hex>"` = HMAC over the bytes
//!    from `###\n` through `%%%\n`.
//!
//! A netstring packet is authenticated by its outer HMAC alone (as Heartbeat's
//! `netstring2msg` does): the inner one sits inside the bytes the outer one
//! covers, so checking it too would add no protection. A classic packet is
//! authenticated by its inner `auth`.
//!
//! Numbers are mixed: `seq`, `hg`, `ts`, `dt` (ms) and `ackseq` are hex, as is
//! `firstseq` in `NS_nak_rexmit`; `firstseq`/`lastseq` in `NS_rexmit` and
//! `protocol` are decimal ([`number`]).
//!
//! Data flow: [`decode`] takes the bytes of one UDP datagram and a
//! [`Keyring`], checks framing, bounds and authentication, and returns a
//! [`Message`]; [`encode`] does the reverse and adds both HMACs.

#![forbid(unsafe_code)]

pub mod auth;
mod codec;
mod message;
pub mod number;
#[cfg(test)]
mod tests;

pub use auth::{AuthKey, AuthMethod, Keyring, MAX_KEY_INDEX};
pub use codec::{classic_form, decode, encode, Decoded, Framing};
pub use message::{field, Field, Message, Value};

/// Largest datagram the decoder accepts and the encoder produces (a UDP
/// payload over IPv4 cannot be larger).
pub const MAX_PACKET_BYTES: usize = 65_507;
/// Most fields one message may carry (Heartbeat's own messages carry 8-16).
pub const MAX_FIELDS: usize = 256;
/// Longest field name accepted.
pub const MAX_NAME_BYTES: usize = 64;

/// Why a Heartbeat 3 packet could not be decoded or encoded. No variant
/// leaves state behind: a packet that fails is simply not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hb3Error {
    /// The datagram is larger than any Heartbeat packet can be.
    #[error("packet of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Bytes received or to be sent.
        len: usize,
        /// The limit, [`MAX_PACKET_BYTES`].
        max: usize,
    },
    /// The packet starts with neither `###\n` (netstring) nor `>>>\n` (classic).
    #[error("not a Heartbeat packet: it starts with neither \"###\\n\" nor \">>>\\n\"")]
    UnknownFraming,
    /// A netstring or line is cut short or has bytes where a delimiter belongs.
    #[error("malformed packet at byte {offset}: {what}")]
    Malformed {
        /// Offset of the problem in the packet.
        offset: usize,
        /// What was expected there.
        what: &'static str,
    },
    /// More fields than [`MAX_FIELDS`].
    #[error("packet carries more than {max} fields")]
    TooManyFields {
        /// The limit.
        max: usize,
    },
    /// A field name is empty, too long, or has a character Heartbeat never uses.
    #[error("invalid field name {name:?}")]
    InvalidFieldName {
        /// The name, lossily decoded for display.
        name: String,
    },
    /// A string field holds a NUL or a newline (Heartbeat strings are C
    /// strings, and the classic form is line-based).
    #[error("string field `{name}` holds a NUL or newline byte")]
    InvalidStringValue {
        /// The field name.
        name: String,
    },
    /// A field type Heartbeat does not define, or one this framing cannot carry.
    #[error("field `{name}` has type {kind}, which {framing} framing cannot carry")]
    UnsupportedFieldType {
        /// The field name.
        name: String,
        /// The type number.
        kind: u8,
        /// `netstring` or `classic`.
        framing: &'static str,
    },
    /// A binary field of a classic packet is not valid base64.
    #[error("binary field `{name}` is not valid base64")]
    InvalidBase64 {
        /// The field name.
        name: String,
    },
    /// The packet carries no authentication where one is required.
    #[error("packet carries no authentication ({which})")]
    MissingAuth {
        /// Which authentication is missing.
        which: &'static str,
    },
    /// The authentication string is not `"<index> <lowercase hex>"`.
    #[error("malformed authentication string {value:?}")]
    MalformedAuth {
        /// The string, lossily decoded.
        value: String,
    },
    /// The packet is signed with a key index the keyring does not hold.
    #[error("packet is signed with key index {index}, which is not configured in authkeys")]
    UnknownKeyIndex {
        /// The index in the packet.
        index: u8,
    },
    /// The digest does not match: wrong key, or the packet was altered.
    #[error("authentication failed with key index {index} (wrong key or altered packet)")]
    AuthenticationFailed {
        /// The key index used.
        index: u8,
    },
    /// The message to encode already has an `auth` field (the encoder adds it).
    #[error("message to encode already carries an `auth` field; the encoder adds it")]
    AuthFieldPresent,
    /// The same field name appears twice; Heartbeat reads only the first.
    #[error("field `{name}` appears more than once")]
    DuplicateField {
        /// The field name.
        name: String,
    },
}
