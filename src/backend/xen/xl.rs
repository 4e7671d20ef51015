//! xl's migration protocol and libxl's stream framing, as the stock
//! `xl migrate-receive` expects them (`tools/xl/xl_migrate.c`,
//! `tools/xl/xl_saverestore.c`, `tools/libs/light/libxl_stream_write.c`,
//! `docs/specs/libxl-migration-stream.pandoc`, Xen 4.17).
//!
//! ```text
//!  sender (S)                                   receiver (R: xl migrate-receive)
//!           <── "xl migration receiver ready, send binary domain data.\n"
//!  save file header + config JSON ──>
//!  libxl stream: header, LIBXC_CONTEXT, <the libxc stream>, END ──>
//!                                               creates the domain, paused
//!           <── "domain received, ready to unpause\0"
//!  renames its domain <name>--migratedaway
//!  "domain is yours, you are cleared to unpause\0" ──>
//!                                               renames, unpauses
//!           <── "my copy unpause results are as follows\0" + 1 status byte
//!  0: destroys its domain                       non-0: destroys its copy, then
//!                                               <── "domain is yours, ...\0"
//!                                               (S may resume its domain)
//! ```
//!
//! Save file header (native byte order, little endian on x86):
//!
//! ```text
//!  0                    32          36         40        44          48
//!  +--------------------+-----------+----------+---------+-----------+---------+--------+
//!  | "Xen saved domain, | byteorder | mandatory| optional| optional  | u32     | config |
//!  |  xl format\n \0 \r"| 0x01020304| flags    | flags   | data len  | cfg len | JSON\0 |
//!  +--------------------+-----------+----------+---------+-----------+---------+--------+
//! ```
//!
//! libxl stream header: `u64 ident "LibxlFmt"`, `u32 version 2`, `u32
//! options`, all big endian; then records framed like libxc's (`u32 type;
//! u32 length;` little endian, body padded to 8 bytes).

#![forbid(unsafe_code)]

use super::records::padding;

/// R → S first: the receiver is ready (no NUL: xl sends `sizeof - 1`).
pub const RECEIVER_BANNER: &[u8] = b"xl migration receiver ready, send binary domain data.\n";
/// R → S after the stream: the domain is built and paused (NUL included).
pub const RECEIVER_READY: &[u8] = b"domain received, ready to unpause\0";
/// S → R: unpause it (and, R → S after a failed start: resume yours).
pub const PERMISSION_TO_GO: &[u8] = b"domain is yours, you are cleared to unpause\0";
/// R → S: followed by one status byte, 0 when the domain runs there.
pub const REPORT: &[u8] = b"my copy unpause results are as follows\0";

/// The first line of perfplus's receive side (`perfplus migrate-receive`),
/// before it relays `xl migrate-receive`'s own messages: the stream that
/// follows is transcoded ([`super::transcode`]).
pub const PERFPLUS_RECEIVER_HELLO: &[u8] =
    b"perfplus migrate-receive ready, transcoded xl stream version 1\n";

/// The save file header's magic (32 bytes; the C array drops the literal's NUL).
const SAVEFILE_MAGIC: &[u8; 32] = b"Xen saved domain, xl format\n \0 \r";
/// `SAVEFILE_BYTEORDER_VALUE`, written in native (little-endian) order.
const SAVEFILE_BYTEORDER: u32 = 0x0102_0304;
/// `XL_MANDATORY_FLAG_JSON`: the config is JSON.
const XL_MANDATORY_FLAG_JSON: u32 = 1 << 0;
/// `XL_MANDATORY_FLAG_STREAMv2`: a libxl v2 stream follows.
const XL_MANDATORY_FLAG_STREAMV2: u32 = 1 << 1;

/// `RESTORE_STREAM_IDENT`: "LibxlFmt".
const LIBXL_STREAM_IDENT: u64 = 0x4c69_6278_6c46_6d74;
/// `RESTORE_STREAM_VERSION`.
const LIBXL_STREAM_VERSION: u32 = 2;
/// libxl `REC_TYPE_END`.
pub(crate) const LIBXL_REC_END: u32 = 0;
/// libxl `REC_TYPE_LIBXC_CONTEXT`: the libxc stream follows inline.
pub(crate) const LIBXL_REC_LIBXC_CONTEXT: u32 = 1;

/// What xl writes before the libxl stream: the save file header and the
/// domain's configuration (`config_json` without its terminating NUL,
/// which is added here as xl does).
pub fn save_file_header(config_json: &[u8]) -> Vec<u8> {
    let config_len = config_json.len() + 1;
    let optional_len = 4 + config_len;
    let mut out = Vec::with_capacity(48 + config_len);
    out.extend_from_slice(SAVEFILE_MAGIC);
    out.extend_from_slice(&SAVEFILE_BYTEORDER.to_le_bytes());
    out.extend_from_slice(&(XL_MANDATORY_FLAG_STREAMV2 | XL_MANDATORY_FLAG_JSON).to_le_bytes());
    out.extend_from_slice(&0_u32.to_le_bytes());
    // A domain configuration is kilobytes; xl's own lengths are ints.
    out.extend_from_slice(
        &u32::try_from(optional_len)
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&u32::try_from(config_len).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(config_json);
    out.push(0);
    out
}

/// The libxl stream header.
pub fn libxl_stream_header() -> [u8; 16] {
    let mut h = [0_u8; 16];
    h[0..8].copy_from_slice(&LIBXL_STREAM_IDENT.to_be_bytes());
    h[8..12].copy_from_slice(&LIBXL_STREAM_VERSION.to_be_bytes());
    h
}

/// An empty libxl record of `rtype` (END, LIBXC_CONTEXT).
pub fn libxl_empty_record(rtype: u32) -> [u8; 8] {
    let mut r = [0_u8; 8];
    r[0..4].copy_from_slice(&rtype.to_le_bytes());
    debug_assert_eq!(padding(0), 0);
    r
}

/// Everything the sender writes before the libxc stream: save file
/// header, config, libxl header, LIBXC_CONTEXT.
pub fn preamble(config_json: &[u8]) -> Vec<u8> {
    let mut out = save_file_header(config_json);
    out.extend_from_slice(&libxl_stream_header());
    out.extend_from_slice(&libxl_empty_record(LIBXL_REC_LIBXC_CONTEXT));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_save_file_header_is_what_xl_writes() {
        let h = save_file_header(b"{}");
        assert_eq!(h.len(), 32 + 16 + 4 + 3);
        assert_eq!(&h[..28], b"Xen saved domain, xl format\n");
        assert_eq!(&h[28..32], b" \0 \r");
        assert_eq!(&h[32..36], &[4, 3, 2, 1]);
        assert_eq!(&h[36..40], &[3, 0, 0, 0]);
        assert_eq!(&h[40..44], &[0; 4]);
        assert_eq!(&h[44..48], &[7, 0, 0, 0]);
        assert_eq!(&h[48..52], &[3, 0, 0, 0]);
        assert_eq!(&h[52..], b"{}\0");
    }

    #[test]
    fn the_libxl_stream_starts_with_its_big_endian_header() {
        let p = preamble(b"{}");
        let at = p.len() - 24;
        assert_eq!(&p[at..at + 8], b"LibxlFmt");
        assert_eq!(&p[at + 8..at + 16], &[0, 0, 0, 2, 0, 0, 0, 0]);
        assert_eq!(&p[at + 16..], &[1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn handshake_messages_carry_their_nul_except_the_banner() {
        assert_eq!(RECEIVER_BANNER.last(), Some(&b'\n'));
        for m in [RECEIVER_READY, PERMISSION_TO_GO, REPORT] {
            assert_eq!(m.last(), Some(&0));
        }
    }
}
