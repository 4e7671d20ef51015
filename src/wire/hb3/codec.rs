//! Netstring and classic framing: [`encode`] and the strict, bounded [`decode`].

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::message::{field, validate_name, Message, Value};
use super::{Hb3Error, Keyring, MAX_FIELDS, MAX_PACKET_BYTES};

const NETSTRING_START: &[u8] = b"###\n";
const NETSTRING_END: &[u8] = b"%%%\n";
const CLASSIC_START: &[u8] = b">>>\n";
const CLASSIC_END: &[u8] = b"<<<\n";
/// Digits of a netstring length prefix: enough for [`MAX_PACKET_BYTES`].
const MAX_LENGTH_DIGITS: usize = 5;

/// How a packet is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `###\n` ... `%%%\n` + outer HMAC: what Heartbeat sends over UDP.
    Netstring,
    /// `>>>\n` ... `<<<\n` with an inner `auth` line: also accepted by Heartbeat.
    Classic,
}

/// A decoded, authenticated packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The message, without its `auth` field.
    pub message: Message,
    /// How it was framed.
    pub framing: Framing,
    /// The index of the key that authenticated it.
    pub key_index: u8,
}

/// The classic form of `message`, what the inner `auth` signs: every field
/// except `auth`, as `name=value\n`, binary fields as `(1)name=<base64>\n`.
/// `None` if the message holds a field type the classic form cannot carry.
pub fn classic_form(message: &Message) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for f in message.fields() {
        if f.name == field::AUTH {
            continue;
        }
        match &f.value {
            Value::Str(v) => {
                out.extend_from_slice(f.name.as_bytes());
                out.push(b'=');
                out.extend_from_slice(v);
            }
            Value::Binary(v) => {
                out.extend_from_slice(b"(1)");
                out.extend_from_slice(f.name.as_bytes());
                out.push(b'=');
                out.extend_from_slice(BASE64.encode(v).as_bytes());
            }
            Value::Other { .. } => return None,
        }
        out.push(b'\n');
    }
    Some(out)
}

/// Encode `message` for the wire, signed with the keyring's signing key.
///
/// The inner `auth` field is appended when every field is a string or binary
/// field (as Heartbeat's `add_msg_auth`); netstring framing adds the outer
/// HMAC. Classic framing needs the inner `auth`, so it refuses other types.
pub fn encode(message: &Message, framing: Framing, keys: &Keyring) -> Result<Vec<u8>, Hb3Error> {
    if message.get(field::AUTH).is_some() {
        return Err(Hb3Error::AuthFieldPresent);
    }
    message.validate()?;
    let inner = classic_form(message).map(|classic| keys.sign(&classic));
    if message.fields().len() + usize::from(inner.is_some()) > MAX_FIELDS {
        return Err(Hb3Error::TooManyFields { max: MAX_FIELDS });
    }
    let out = match framing {
        Framing::Netstring => {
            let mut body = NETSTRING_START.to_vec();
            let mut put = |kind: u8, name: &str, value: &[u8]| {
                let len = 3 + name.len() + 1 + value.len();
                body.extend_from_slice(format!("{len}:({kind}){name}=").as_bytes());
                body.extend_from_slice(value);
                body.push(b',');
            };
            for f in message.fields() {
                put(f.value.kind(), &f.name, f.value.bytes());
            }
            if let Some(auth) = &inner {
                put(0, field::AUTH, auth.as_bytes());
            }
            body.extend_from_slice(NETSTRING_END);
            let outer = keys.sign(&body);
            body.extend_from_slice(format!("{}:{outer},", outer.len()).as_bytes());
            body
        }
        Framing::Classic => {
            let (Some(classic), Some(auth)) = (classic_form(message), inner) else {
                let f = message.fields().iter().find(|f| f.value.kind() > 1);
                return Err(Hb3Error::UnsupportedFieldType {
                    name: f.map(|f| f.name.clone()).unwrap_or_default(),
                    kind: f.map_or(0, |f| f.value.kind()),
                    framing: "classic",
                });
            };
            let mut out = CLASSIC_START.to_vec();
            out.extend_from_slice(&classic);
            out.extend_from_slice(format!("auth={auth}\n").as_bytes());
            out.extend_from_slice(CLASSIC_END);
            out
        }
    };
    if out.len() > MAX_PACKET_BYTES {
        return Err(Hb3Error::TooLarge {
            len: out.len(),
            max: MAX_PACKET_BYTES,
        });
    }
    Ok(out)
}

/// Decode and authenticate one datagram.
///
/// Strict: the whole datagram must be one message, every length must match,
/// field names and types must be valid, no field may repeat, and the packet
/// must verify under a key of `keys`. Bounded: at most [`MAX_PACKET_BYTES`]
/// bytes and [`MAX_FIELDS`] fields; nothing is allocated beyond the input size.
pub fn decode(packet: &[u8], keys: &Keyring) -> Result<Decoded, Hb3Error> {
    if packet.len() > MAX_PACKET_BYTES {
        return Err(Hb3Error::TooLarge {
            len: packet.len(),
            max: MAX_PACKET_BYTES,
        });
    }
    if packet.starts_with(NETSTRING_START) {
        decode_netstring(packet, keys)
    } else if packet.starts_with(CLASSIC_START) {
        decode_classic(packet, keys)
    } else {
        Err(Hb3Error::UnknownFraming)
    }
}

/// A cursor over the packet that reports offsets in its errors.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn malformed(&self, what: &'static str) -> Hb3Error {
        Hb3Error::Malformed {
            offset: self.at,
            what,
        }
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.at..]
    }

    /// One netstring `<len>:<payload>,`; returns the payload.
    fn netstring(&mut self) -> Result<&'a [u8], Hb3Error> {
        let rest = self.rest();
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > MAX_LENGTH_DIGITS {
            return Err(self.malformed("a netstring length (1 to 5 digits)"));
        }
        if digits > 1 && rest[0] == b'0' {
            return Err(self.malformed("a netstring length without leading zeros"));
        }
        let len: usize = rest[..digits]
            .iter()
            .fold(0, |n, d| n * 10 + usize::from(d - b'0'));
        if rest.get(digits) != Some(&b':') {
            self.at += digits;
            return Err(self.malformed("':' after the netstring length"));
        }
        let start = digits + 1;
        let end = start
            .checked_add(len)
            .filter(|end| *end < rest.len())
            .ok_or_else(|| self.malformed("a netstring as long as its length says"))?;
        if rest[end] != b',' {
            self.at += end;
            return Err(self.malformed("',' at the end of the netstring"));
        }
        self.at += end + 1;
        Ok(&rest[start..end])
    }
}

fn decode_netstring(packet: &[u8], keys: &Keyring) -> Result<Decoded, Hb3Error> {
    let mut reader = Reader {
        bytes: packet,
        at: NETSTRING_START.len(),
    };
    let mut message = Message::new();
    while !reader.rest().starts_with(NETSTRING_END) {
        if message.fields().len() >= MAX_FIELDS {
            return Err(Hb3Error::TooManyFields { max: MAX_FIELDS });
        }
        let field_at = reader.at;
        let payload = reader.netstring()?;
        let err_at = |what| Hb3Error::Malformed {
            offset: field_at,
            what,
        };
        // (<type>)name=value
        let [b'(', kind, b')', named @ ..] = payload else {
            return Err(err_at("a field starting with \"(<type>)\""));
        };
        let eq = named
            .iter()
            .position(|c| *c == b'=')
            .ok_or_else(|| err_at("'=' after the field name"))?;
        let (name, value) = (&named[..eq], &named[eq + 1..]);
        validate_name(name)?;
        let name = String::from_utf8_lossy(name).into_owned();
        let value = match kind {
            b'0' => Value::Str(value.to_vec()),
            b'1' => Value::Binary(value.to_vec()),
            b'2'..=b'5' => Value::Other {
                kind: kind - b'0',
                bytes: value.to_vec(),
            },
            other => {
                return Err(Hb3Error::UnsupportedFieldType {
                    name,
                    kind: other.wrapping_sub(b'0'),
                    framing: "netstring",
                })
            }
        };
        message.push(&name, value);
    }
    let body_end = reader.at + NETSTRING_END.len();
    reader.at = body_end;
    if reader.rest().is_empty() {
        return Err(Hb3Error::MissingAuth {
            which: "the outer HMAC netstring after \"%%%\\n\"",
        });
    }
    let outer = reader.netstring()?;
    if !reader.rest().is_empty() {
        return Err(reader.malformed("the end of the packet after the outer HMAC"));
    }
    message.validate()?;
    let key_index = keys.verify(outer, &packet[..body_end])?;
    message.take(field::AUTH);
    Ok(Decoded {
        message,
        framing: Framing::Netstring,
        key_index,
    })
}

fn decode_classic(packet: &[u8], keys: &Keyring) -> Result<Decoded, Hb3Error> {
    let Some(body) = packet
        .strip_prefix(CLASSIC_START)
        .and_then(|b| b.strip_suffix(CLASSIC_END))
    else {
        return Err(Hb3Error::Malformed {
            offset: packet.len(),
            what: "\"<<<\\n\" at the end of a classic packet",
        });
    };
    if !body.is_empty() && !body.ends_with(b"\n") {
        return Err(Hb3Error::Malformed {
            offset: packet.len() - CLASSIC_END.len(),
            what: "a newline at the end of every line",
        });
    }
    let mut message = Message::new();
    let mut auth = None;
    let mut offset = CLASSIC_START.len();
    for line in body.split_inclusive(|c| *c == b'\n') {
        let line_at = offset;
        offset += line.len();
        let line = &line[..line.len() - 1];
        if message.fields().len() >= MAX_FIELDS {
            return Err(Hb3Error::TooManyFields { max: MAX_FIELDS });
        }
        let (binary, line) = match line.strip_prefix(b"(") {
            Some(rest) => match rest {
                [b'1', b')', rest @ ..] => (true, rest),
                [kind, ..] => {
                    return Err(Hb3Error::UnsupportedFieldType {
                        name: String::new(),
                        kind: kind.wrapping_sub(b'0'),
                        framing: "classic",
                    })
                }
                [] => {
                    return Err(Hb3Error::Malformed {
                        offset: line_at,
                        what: "a type number after '('",
                    })
                }
            },
            None => (false, line),
        };
        let eq = line
            .iter()
            .position(|c| *c == b'=')
            .ok_or(Hb3Error::Malformed {
                offset: line_at,
                what: "'=' after the field name",
            })?;
        let (name, value) = (&line[..eq], &line[eq + 1..]);
        validate_name(name)?;
        let name = String::from_utf8_lossy(name).into_owned();
        if name == field::AUTH && !binary {
            if auth.replace(value).is_some() {
                return Err(Hb3Error::DuplicateField { name });
            }
            continue;
        }
        let value = if binary {
            Value::Binary(
                BASE64
                    .decode(value)
                    .map_err(|_| Hb3Error::InvalidBase64 { name: name.clone() })?,
            )
        } else {
            Value::Str(value.to_vec())
        };
        message.push(&name, value);
    }
    message.validate()?;
    let auth = auth.ok_or(Hb3Error::MissingAuth {
        which: "the `auth` line a classic packet needs",
    })?;
    let classic = classic_form(&message).unwrap_or_default();
    let key_index = keys.verify(auth, &classic)?;
    Ok(Decoded {
        message,
        framing: Framing::Classic,
        key_index,
    })
}
