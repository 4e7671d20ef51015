//! A Heartbeat message: an ordered list of named, typed fields.

use super::{Hb3Error, MAX_FIELDS, MAX_NAME_BYTES};

/// The value of one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Type 0: a C string (no NUL, no newline), usually ASCII.
    Str(Vec<u8>),
    /// Type 1: raw bytes (e.g. a 16-byte UUID), base64 in the classic form.
    Binary(Vec<u8>),
    /// Types 2-5 (struct, list, compressed, uncompressed): carried opaque,
    /// byte for byte, so that the outer HMAC still verifies. Heartbeat adds no
    /// inner `auth` to messages holding them.
    Other {
        /// The type number (2 to 5).
        kind: u8,
        /// The value bytes as they were on the wire.
        bytes: Vec<u8>,
    },
}

impl Value {
    /// The Heartbeat type number of this value.
    pub fn kind(&self) -> u8 {
        match self {
            Value::Str(_) => 0,
            Value::Binary(_) => 1,
            Value::Other { kind, .. } => *kind,
        }
    }

    /// The raw bytes of the value.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Value::Str(b) | Value::Binary(b) | Value::Other { bytes: b, .. } => b,
        }
    }
}

/// One named field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field name (`t`, `src`, `seq`, ...).
    pub name: String,
    /// The field value.
    pub value: Value,
}

/// The names of the fields perfplus reads or writes.
pub mod field {
    /// Message type (`status`, `NS_ackmsg`, ...).
    pub const TYPE: &str = "t";
    /// Node status (`init`, `up`, `active`, `dead`).
    pub const STATUS: &str = "st";
    /// The sender's deadtime in hex milliseconds.
    pub const DEADTIME: &str = "dt";
    /// Protocol version (decimal, `1`).
    pub const PROTOCOL: &str = "protocol";
    /// Sender node name (lower case).
    pub const SOURCE: &str = "src";
    /// Sender UUID, 16 bytes, binary.
    pub const SOURCE_UUID: &str = "srcuuid";
    /// Message sequence number, hex, from 1 in each generation.
    pub const SEQ: &str = "seq";
    /// Sender generation, hex.
    pub const GENERATION: &str = "hg";
    /// Sender's `time(2)`, hex.
    pub const TIMESTAMP: &str = "ts";
    /// Sender's `/proc/loadavg`.
    pub const LOAD: &str = "ld";
    /// Hop limit.
    pub const TTL: &str = "ttl";
    /// Inner authentication.
    pub const AUTH: &str = "auth";
    /// Destination node name (messages to one node).
    pub const DEST: &str = "dest";
    /// Destination UUID, 16 bytes, binary.
    pub const DEST_UUID: &str = "destuuid";
    /// Acknowledged sequence number, hex.
    pub const ACK_SEQ: &str = "ackseq";
    /// First sequence number of a retransmit request (decimal) or NAK (hex).
    pub const FIRST_SEQ: &str = "firstseq";
    /// Last sequence number of a retransmit request (decimal).
    pub const LAST_SEQ: &str = "lastseq";
}

impl Message {
    /// An empty message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a string field (builder style).
    pub fn with_str(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.push(name, Value::Str(value.into()));
        self
    }

    /// Append a binary field (builder style).
    pub fn with_binary(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.push(name, Value::Binary(value.into()));
        self
    }

    /// Append a field.
    pub fn push(&mut self, name: &str, value: Value) {
        self.fields.push(Field {
            name: name.to_owned(),
            value,
        });
    }

    /// The fields, in wire order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The value of the field `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }

    /// The field `name` as UTF-8 text, if present as a string field.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            Value::Str(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The field `name` as a hex number, if present and well formed.
    pub fn get_hex(&self, name: &str) -> Option<u64> {
        super::number::parse_hex(self.get_str(name)?)
    }

    /// The field `name` as a decimal number, if present and well formed.
    pub fn get_decimal(&self, name: &str) -> Option<u64> {
        super::number::parse_decimal(self.get_str(name)?)
    }

    /// The field `name` as binary bytes, if present as a binary field.
    pub fn get_binary(&self, name: &str) -> Option<&[u8]> {
        match self.get(name)? {
            Value::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// Whether every field is a string or binary field, i.e. the message has a
    /// classic form and Heartbeat would give it an inner `auth`.
    pub fn is_classic_only(&self) -> bool {
        self.fields.iter().all(|f| f.value.kind() <= 1)
    }

    /// Remove the field `name` (every occurrence); returns its first value.
    pub(crate) fn take(&mut self, name: &str) -> Option<Value> {
        let index = self.fields.iter().position(|f| f.name == name)?;
        let taken = self.fields.remove(index).value;
        self.fields.retain(|f| f.name != name);
        Some(taken)
    }

    /// Check every field against the limits both framings rely on.
    pub(crate) fn validate(&self) -> Result<(), Hb3Error> {
        if self.fields.len() > MAX_FIELDS {
            return Err(Hb3Error::TooManyFields { max: MAX_FIELDS });
        }
        for (i, f) in self.fields.iter().enumerate() {
            validate_name(f.name.as_bytes())?;
            if let Value::Str(b) = &f.value {
                if b.iter().any(|c| *c == 0 || *c == b'\n') {
                    return Err(Hb3Error::InvalidStringValue {
                        name: f.name.clone(),
                    });
                }
            }
            if let Value::Other { kind, .. } = &f.value {
                if !(2..=5).contains(kind) {
                    return Err(Hb3Error::UnsupportedFieldType {
                        name: f.name.clone(),
                        kind: *kind,
                        framing: "netstring",
                    });
                }
            }
            if self.fields[..i].iter().any(|g| g.name == f.name) {
                return Err(Hb3Error::DuplicateField {
                    name: f.name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A field name: 1 to [`MAX_NAME_BYTES`] printable ASCII bytes, without `=`,
/// `,` or a leading `(` (each would make one of the framings ambiguous).
pub(crate) fn validate_name(name: &[u8]) -> Result<(), Hb3Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name[0] != b'('
        && name
            .iter()
            .all(|c| c.is_ascii_graphic() && *c != b'=' && *c != b',');
    if ok {
        Ok(())
    } else {
        Err(Hb3Error::InvalidFieldName {
            name: String::from_utf8_lossy(&name[..name.len().min(MAX_NAME_BYTES + 8)]).into_owned(),
        })
    }
}

/// A Heartbeat message: fields in wire order. Build one with
/// [`Message::with_str`] / [`Message::with_binary`]; the encoder adds the
/// `auth` field and the outer HMAC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    fields: Vec<Field>,
}
