//! Records of the libxc migration stream, version 3
//! (`docs/specs/libxc-migration-stream.pandoc`,
//! `tools/libs/guest/xg_sr_stream_format.h`), as far as the Xen backend
//! writes them itself.
//!
//! ```text
//!  0      4      8                        8 + body_length, padded to 8
//!  +------+------+--------------------------+--------+
//!  | type | body_length | body            | 0 pad  |
//!  +------+------+--------------------------+--------+
//!    u32    u32   (little endian on x86)
//! ```
//!
//! A domain's CPU and platform state goes as a run of these records, so
//! the state blob of an HVM/PVH domain *is* that run, byte for byte: a
//! stream writer copies it into the stream unchanged.

/// `REC_TYPE_X86_TSC_INFO`: `u32 mode; u32 khz; u64 nsec; u32 incarnation; u32 res`.
pub(crate) const REC_TYPE_X86_TSC_INFO: u32 = 0x0000_0008;
/// `REC_TYPE_HVM_CONTEXT`: the blob of `xc_domain_hvm_getcontext`.
pub(crate) const REC_TYPE_HVM_CONTEXT: u32 = 0x0000_0009;
/// `REC_TYPE_HVM_PARAMS`: `u32 count; u32 res; {u64 index; u64 value}[count]`.
pub(crate) const REC_TYPE_HVM_PARAMS: u32 = 0x0000_000a;

/// The largest body the stock restore accepts (`REC_LENGTH_MAX`, 128 MiB).
pub(crate) const REC_LENGTH_MAX: usize = 128 << 20;

/// Append one record (header, body, zero padding to 8 bytes) to `out`;
/// `None` (and nothing appended) if the body is over [`REC_LENGTH_MAX`].
pub(crate) fn write_record(out: &mut Vec<u8>, rtype: u32, body: &[u8]) -> Option<()> {
    if body.len() > REC_LENGTH_MAX {
        return None;
    }
    let length = u32::try_from(body.len()).ok()?;
    out.extend_from_slice(&rtype.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(body);
    let pad = (8 - body.len() % 8) % 8;
    out.extend(std::iter::repeat_n(0_u8, pad));
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_padded_to_eight_bytes_with_zeros() {
        let mut out = Vec::new();
        write_record(&mut out, REC_TYPE_HVM_CONTEXT, &[1, 2, 3]).unwrap();
        assert_eq!(out, [9, 0, 0, 0, 3, 0, 0, 0, 1, 2, 3, 0, 0, 0, 0, 0]);
        let mut aligned = Vec::new();
        write_record(&mut aligned, REC_TYPE_X86_TSC_INFO, &[7; 24]).unwrap();
        assert_eq!(aligned.len(), 8 + 24);
    }
}
