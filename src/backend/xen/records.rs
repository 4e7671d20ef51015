//! The libxc migration stream, version 3
//! (`docs/specs/libxc-migration-stream.pandoc`,
//! `tools/libs/guest/xg_sr_stream_format.h`): the parts perfplus writes
//! itself (PVH guests) and the parts its transcoder looks into (PV and
//! PVH).
//!
//! ```text
//!  image header (24 bytes, big endian)    domain header (16 bytes)
//!  +--------------+------+-----+-----+    +------+-------+-----+-------+-------+
//!  | marker ~0u64 | XENF | 3   | opt |    | type | shift | res | major | minor |
//!  +--------------+------+-----+-----+    +------+-------+-----+-------+-------+
//!
//!  then records (little endian on x86), each padded to 8 bytes with zeros:
//!  0      4             8                          8 + body_length
//!  +------+-------------+--------------------------+--------+
//!  | type | body_length | body                     | 0 pad  |
//!  +------+-------------+--------------------------+--------+
//!
//!  PAGE_DATA body:
//!  +-------+-----+------------------------+-------------------------------+
//!  | count | res | count x u64 pfn word   | 4096 bytes per page with data |
//!  +-------+-----+------------------------+-------------------------------+
//!  pfn word: type nibble (XEN_DOMCTL_PFINFO_* >> 28) in bits 60..64,
//!            pfn in bits 0..52
//! ```
//!
//! A domain's CPU and platform state goes as a run of these records, so
//! the state blob of an HVM/PVH domain *is* that run, byte for byte: a
//! stream writer copies it into the stream unchanged.

#![forbid(unsafe_code)]

/// `REC_TYPE_END`: the last libxc record.
pub(crate) const REC_TYPE_END: u32 = 0x0000_0000;
/// `REC_TYPE_PAGE_DATA`: a batch of pages.
pub(crate) const REC_TYPE_PAGE_DATA: u32 = 0x0000_0001;
/// `REC_TYPE_X86_TSC_INFO`: `u32 mode; u32 khz; u64 nsec; u32 incarnation; u32 res`.
pub(crate) const REC_TYPE_X86_TSC_INFO: u32 = 0x0000_0008;
/// `REC_TYPE_HVM_CONTEXT`: the blob of `xc_domain_hvm_getcontext`.
pub(crate) const REC_TYPE_HVM_CONTEXT: u32 = 0x0000_0009;
/// `REC_TYPE_HVM_PARAMS`: `u32 count; u32 res; {u64 index; u64 value}[count]`.
pub(crate) const REC_TYPE_HVM_PARAMS: u32 = 0x0000_000a;
/// `REC_TYPE_STATIC_DATA_END`: empty; ends the static data (v3).
pub(crate) const REC_TYPE_STATIC_DATA_END: u32 = 0x0000_0010;
/// `REC_TYPE_X86_CPUID_POLICY`: `xen_cpuid_leaf_t[]`.
pub(crate) const REC_TYPE_X86_CPUID_POLICY: u32 = 0x0000_0011;
/// `REC_TYPE_X86_MSR_POLICY`: `xen_msr_entry_t[]`.
pub(crate) const REC_TYPE_X86_MSR_POLICY: u32 = 0x0000_0012;

/// The largest body the stock restore accepts (`REC_LENGTH_MAX`, 128 MiB).
pub(crate) const REC_LENGTH_MAX: usize = 128 << 20;

/// Bytes of the image header.
pub(crate) const IMAGE_HEADER_BYTES: usize = 24;
/// Bytes of the domain header.
pub(crate) const DOMAIN_HEADER_BYTES: usize = 16;
/// `DHDR_TYPE_X86_PV`.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) const DHDR_TYPE_X86_PV: u32 = 1;
/// `DHDR_TYPE_X86_HVM` (HVM and PVH guests).
pub(crate) const DHDR_TYPE_X86_HVM: u32 = 2;

/// Bytes per page in the stream (`page_shift` 12 on x86).
pub(crate) const PAGE_SIZE: usize = 4096;
/// Most pfns in one PAGE_DATA record (libxenguest's `MAX_BATCH_SIZE`).
pub(crate) const MAX_BATCH_PFNS: usize = 1024;
/// The pfn bits of a PAGE_DATA pfn word (`PAGE_DATA_PFN_MASK`).
pub(crate) const PFN_MASK: u64 = (1 << 52) - 1;
/// Where the type nibble sits in a PAGE_DATA pfn word.
const TYPE_SHIFT: u32 = 60;
/// Bytes of a PAGE_DATA body before the pfn words (`count`, `res`).
pub(crate) const PAGE_DATA_HEADER_BYTES: usize = 8;
/// The largest PAGE_DATA body: a full batch, every page with data.
pub(crate) const MAX_PAGE_DATA_BODY: usize =
    PAGE_DATA_HEADER_BYTES + MAX_BATCH_PFNS * (8 + PAGE_SIZE);

/// The type nibble of a PAGE_DATA pfn word (`XEN_DOMCTL_PFINFO_*` >> 28).
pub(crate) fn type_nibble(word: u64) -> u8 {
    // Four bits: always fits.
    (word >> TYPE_SHIFT) as u8
}

/// A PAGE_DATA pfn word for `pfn` of type `pfinfo` (an
/// `XEN_DOMCTL_PFINFO_*` value as `xc_get_pfn_type_batch` returns it).
pub(crate) fn pfn_word(pfn: u64, pfinfo: u32) -> u64 {
    (u64::from(pfinfo) << 32) | (pfn & PFN_MASK)
}

/// Whether libxenguest knows this page type (`is_known_page_type`): plain
/// memory, page tables (pinned or not), holes, broken pages.
pub(crate) fn nibble_is_known(nibble: u8) -> bool {
    matches!(nibble, 0x0..=0x4 | 0x9..=0xc | 0xd..=0xf)
}

/// Whether a page of this type carries 4096 bytes of data in the stream
/// (`page_type_has_stream_data`): everything known except XTAB (a hole),
/// XALLOC and BROKEN.
pub(crate) fn nibble_has_data(nibble: u8) -> bool {
    matches!(nibble, 0x0..=0x4 | 0x9..=0xc)
}

/// Whether an `XEN_DOMCTL_PFINFO_*` type (as `xc_get_pfn_type_batch`
/// returns it) carries data.
pub(crate) fn pfinfo_has_data(pfinfo: u32) -> bool {
    // The type sits in the top nibble of the low 32 bits.
    nibble_has_data((pfinfo >> 28) as u8)
}

/// The image header of a little-endian v3 stream.
pub(crate) fn image_header() -> [u8; IMAGE_HEADER_BYTES] {
    let mut h = [0_u8; IMAGE_HEADER_BYTES];
    h[0..8].copy_from_slice(&u64::MAX.to_be_bytes());
    h[8..12].copy_from_slice(&0x5845_4e46_u32.to_be_bytes()); // "XENF"
    h[12..16].copy_from_slice(&3_u32.to_be_bytes());
    // options 0: little endian; reserved zero.
    h
}

/// The domain header for a guest of `guest_type` on Xen `major.minor`.
pub(crate) fn domain_header(guest_type: u32, major: u32, minor: u32) -> [u8; DOMAIN_HEADER_BYTES] {
    let mut h = [0_u8; DOMAIN_HEADER_BYTES];
    h[0..4].copy_from_slice(&guest_type.to_le_bytes());
    h[4..6].copy_from_slice(&12_u16.to_le_bytes());
    h[8..12].copy_from_slice(&major.to_le_bytes());
    h[12..16].copy_from_slice(&minor.to_le_bytes());
    h
}

/// Bytes of padding after a body of `len` bytes.
pub(crate) fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}

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
    out.extend(std::iter::repeat_n(0_u8, padding(body.len())));
    Some(())
}

/// Append a PAGE_DATA record to `out` (nothing if `words` is empty or
/// over a batch): `words` are the pfn words, `page(i)` the contents of
/// the `i`-th page whose type carries data, in order. Returns the pages
/// with data.
pub(crate) fn write_page_data<'a>(
    out: &mut Vec<u8>,
    words: &[u64],
    mut page: impl FnMut(usize) -> &'a [u8],
) -> usize {
    if words.is_empty() || words.len() > MAX_BATCH_PFNS {
        return 0;
    }
    let data_pages = words
        .iter()
        .filter(|&&w| nibble_has_data(type_nibble(w)))
        .count();
    let body = PAGE_DATA_HEADER_BYTES + 8 * words.len() + PAGE_SIZE * data_pages;
    out.reserve(8 + body);
    out.extend_from_slice(&REC_TYPE_PAGE_DATA.to_le_bytes());
    // At most MAX_PAGE_DATA_BODY: fits in u32.
    out.extend_from_slice(&u32::try_from(body).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&u32::try_from(words.len()).unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&0_u32.to_le_bytes());
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    for i in 0..data_pages {
        out.extend_from_slice(page(i));
    }
    data_pages
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

    #[test]
    fn headers_are_laid_out_as_libxenguest_writes_them() {
        let ih = image_header();
        assert_eq!(&ih[..8], &[0xff; 8]);
        assert_eq!(&ih[8..12], b"XENF");
        assert_eq!(&ih[12..16], &[0, 0, 0, 3]);
        assert_eq!(&ih[16..], &[0; 8]);
        let dh = domain_header(DHDR_TYPE_X86_HVM, 4, 17);
        assert_eq!(dh, [2, 0, 0, 0, 12, 0, 0, 0, 4, 0, 0, 0, 17, 0, 0, 0]);
    }

    #[test]
    fn page_data_carries_data_only_for_memory_and_page_tables() {
        // NOTAB, a hole (XTAB), a pinned L4 table.
        let words = [
            pfn_word(5, 0),
            pfn_word(6, 0xf000_0000),
            pfn_word(7, 0x8000_0000 | 0x4000_0000),
        ];
        let pages = [[1_u8; PAGE_SIZE], [2_u8; PAGE_SIZE]];
        let mut out = Vec::new();
        let n = write_page_data(&mut out, &words, |i| &pages[i]);
        assert_eq!(n, 2);
        let body = u32::from_le_bytes(out[4..8].try_into().unwrap()) as usize;
        assert_eq!(body, 8 + 3 * 8 + 2 * PAGE_SIZE);
        assert_eq!(out.len(), 8 + body);
        assert_eq!(type_nibble(words[1]), 0xf);
        assert_eq!(type_nibble(words[2]), 0xc);
        assert!(!nibble_has_data(0xf) && !nibble_has_data(0xd) && !nibble_has_data(0xe));
        assert!(!nibble_is_known(0x5) && !nibble_is_known(0x8));
        assert!(pfinfo_has_data(0x1000_0000) && !pfinfo_has_data(0xf000_0000));
    }
}
