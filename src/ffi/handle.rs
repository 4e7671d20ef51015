//! The only place where raw pointers from C become Rust references or owned
//! values.
//!
//! - Arguments: [`arg_ref`], [`arg_str`], [`arg_bytes`], [`arg_out_bytes`]
//!   check for NULL (and UTF-8) and borrow for the duration of the call.
//! - Out-parameters: [`arg_out`] checks the pointer up front and gives an
//!   [`Out`] that is written once, at the end, so that nothing is written
//!   unless the call succeeds.
//! - Handles: an opaque C type declares who owns its Rust value by
//!   implementing [`BoxHandle`] (one owner, the C caller, until `_free`) or
//!   [`ArcHandle`] (shared with perfplus's threads; `_free` drops the
//!   caller's reference).
//!
//! Every function here is `unsafe`: a non-NULL pointer cannot be checked for
//! validity, so the caller (the exported function, on the word of the C
//! contract in the header) promises it.

// The handle helpers get their first users with the node and migration
// objects; until then only the tests use them.
#![cfg_attr(not(test), allow(dead_code))]

use std::ffi::{c_char, CStr};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

use super::error::Failure;
use super::result::perfplus_result;

/// A checked out-parameter: written at most once, by [`Out::write`].
#[derive(Debug)]
pub(crate) struct Out<'a, T> {
    ptr: NonNull<T>,
    _borrow: PhantomData<&'a mut T>,
}

impl<T> Out<'_, T> {
    /// Write the result. The previous contents are not read or dropped (they
    /// may be uninitialised C memory).
    pub(crate) fn write(self, value: T) {
        // SAFETY: `ptr` is non-NULL and, by the contract of `arg_out`,
        // points to writable memory for a `T` for the duration of the call.
        unsafe { self.ptr.as_ptr().write(value) }
    }
}

/// Check an out-parameter.
///
/// # Safety
/// `ptr` must be NULL or valid for writing a `T` for the rest of the call.
pub(crate) unsafe fn arg_out<'a, T>(
    ptr: *mut T,
    function: &str,
    argument: &str,
) -> Result<Out<'a, T>, Failure> {
    let ptr = NonNull::new(ptr).ok_or_else(|| Failure::null_argument(function, argument))?;
    Ok(Out {
        ptr,
        _borrow: PhantomData,
    })
}

/// Borrow a required pointer argument.
///
/// # Safety
/// `ptr` must be NULL or point to a valid `T` that nothing mutates during
/// the call.
pub(crate) unsafe fn arg_ref<'a, T>(
    ptr: *const T,
    function: &str,
    argument: &str,
) -> Result<&'a T, Failure> {
    // SAFETY: the caller promises validity when non-NULL; NULL gives None.
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::null_argument(function, argument))
}

/// Borrow a required NUL-terminated UTF-8 string.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string that stays valid
/// and unmodified during the call.
pub(crate) unsafe fn arg_str<'a>(
    ptr: *const c_char,
    function: &str,
    argument: &str,
) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::null_argument(function, argument));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's promise.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str().map_err(|e| {
        Failure::new(
            perfplus_result::PERFPLUS_RESULT_INVALID_UTF8,
            format!(
                "{function}: argument `{argument}` is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Borrow `len` bytes; NULL is accepted only with `len == 0`.
///
/// # Safety
/// `ptr` must be NULL or point to `len` readable bytes that nothing mutates
/// during the call.
pub(crate) unsafe fn arg_bytes<'a>(
    ptr: *const u8,
    len: usize,
    function: &str,
    argument: &str,
) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Failure::null_argument(function, argument))
        };
    }
    // SAFETY: non-NULL, `len` readable bytes by the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrow a writable buffer of `len` bytes; NULL is refused.
///
/// # Safety
/// `ptr` must be NULL or point to `len` writable bytes not otherwise
/// accessed during the call.
pub(crate) unsafe fn arg_out_bytes<'a>(
    ptr: *mut u8,
    len: usize,
    function: &str,
    argument: &str,
) -> Result<&'a mut [u8], Failure> {
    if ptr.is_null() {
        return Err(Failure::null_argument(function, argument));
    }
    // SAFETY: non-NULL, `len` writable bytes, exclusive, by the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// Copy `text` into `buf` as `snprintf` does: at most `buf.len() - 1`
/// bytes, cut at a UTF-8 character boundary, then a NUL. Returns the length
/// of the whole text (so a result `>= buf.len()` means it was cut). `buf`
/// must not be empty.
pub(crate) fn copy_c_string(buf: &mut [u8], text: &str) -> usize {
    let Some(room) = buf.len().checked_sub(1) else {
        return text.len();
    };
    let mut cut = text.len().min(room);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    buf[..cut].copy_from_slice(&text.as_bytes()[..cut]);
    buf[cut] = 0;
    text.len()
}

/// Copy `text` into a fixed-size C string field (cut, NUL-terminated).
pub(crate) fn c_string_field<const N: usize>(text: &str) -> [std::ffi::c_char; N] {
    let mut bytes = [0_u8; N];
    copy_c_string(&mut bytes, text);
    bytes.map(|b| std::ffi::c_char::from_ne_bytes([b]))
}

/// Check a caller's text buffer (`buf` of `len` bytes, `out_len`) and fill
/// it with `text` the way `perfplus_last_error` does. The out-parameters
/// are checked before `text` is asked for.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes; `out_len` NULL or
/// writable.
pub(crate) unsafe fn write_text(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
    function: &str,
    text: impl FnOnce() -> Result<String, Failure>,
) -> Result<(), Failure> {
    // SAFETY: forwarded caller promise.
    let buf = unsafe { arg_out_bytes(buf.cast::<u8>(), len, function, "buf") }?;
    // SAFETY: forwarded caller promise.
    let out_len = unsafe { arg_out(out_len, function, "out_len") }?;
    if buf.is_empty() {
        return Err(Failure::new(
            perfplus_result::PERFPLUS_RESULT_BUFFER_TOO_SMALL,
            format!("{function}: `len` is 0, no room for the terminating NUL"),
        ));
    }
    let text = text()?;
    out_len.write(copy_c_string(buf, &text));
    Ok(())
}

/// An opaque C type whose Rust value is boxed and owned by the C caller
/// from `_new` until `_free`.
pub(crate) trait BoxHandle: Sized {
    /// The Rust value behind the handle.
    type Inner;
}

/// An opaque C type whose Rust value sits in an `Arc` shared with
/// perfplus's own threads; the C caller owns one reference.
pub(crate) trait ArcHandle: Sized {
    /// The Rust value behind the handle.
    type Inner: Send + Sync;
}

/// Give a value to C as a new boxed handle.
pub(crate) fn box_handle<H: BoxHandle>(value: H::Inner) -> *mut H {
    Box::into_raw(Box::new(value)).cast::<H>()
}

/// Borrow the value behind a boxed handle.
///
/// # Safety
/// `ptr` must be NULL or a live handle from [`box_handle`] for the same `H`,
/// not used by another thread during the call.
pub(crate) unsafe fn box_handle_ref<'a, H: BoxHandle>(
    ptr: *const H,
    function: &str,
    argument: &str,
) -> Result<&'a H::Inner, Failure> {
    // SAFETY: a live handle of `H` is a `Box<H::Inner>` pointer cast to `H`.
    unsafe { ptr.cast::<H::Inner>().as_ref() }
        .ok_or_else(|| Failure::null_argument(function, argument))
}

/// Borrow the value behind a boxed handle mutably.
///
/// # Safety
/// As [`box_handle_ref`], and no other reference to the value exists during
/// the call.
pub(crate) unsafe fn box_handle_mut<'a, H: BoxHandle>(
    ptr: *mut H,
    function: &str,
    argument: &str,
) -> Result<&'a mut H::Inner, Failure> {
    // SAFETY: a live handle of `H` is a `Box<H::Inner>` pointer cast to `H`,
    // exclusively ours for the call by the caller's promise.
    unsafe { ptr.cast::<H::Inner>().as_mut() }
        .ok_or_else(|| Failure::null_argument(function, argument))
}

/// Take the value back from C and drop it; NULL is a no-op.
///
/// # Safety
/// `ptr` must be NULL or a live handle from [`box_handle`] for the same `H`;
/// it is dangling afterwards.
pub(crate) unsafe fn box_handle_free<H: BoxHandle>(ptr: *mut H) {
    if !ptr.is_null() {
        // SAFETY: the pointer came from `Box::into_raw` in `box_handle` and
        // is freed exactly once by the caller's promise.
        drop(unsafe { Box::from_raw(ptr.cast::<H::Inner>()) });
    }
}

/// Give a shared value to C as a new handle holding one reference.
pub(crate) fn arc_handle<H: ArcHandle>(value: Arc<H::Inner>) -> *const H {
    Arc::into_raw(value).cast::<H>()
}

/// Take a new reference to the value behind a shared handle.
///
/// # Safety
/// `ptr` must be NULL or a live handle from [`arc_handle`] for the same `H`.
pub(crate) unsafe fn arc_handle_clone<H: ArcHandle>(
    ptr: *const H,
    function: &str,
    argument: &str,
) -> Result<Arc<H::Inner>, Failure> {
    if ptr.is_null() {
        return Err(Failure::null_argument(function, argument));
    }
    let ptr = ptr.cast::<H::Inner>();
    // SAFETY: the handle holds one strong count from `Arc::into_raw`, so
    // the allocation is live; this adds the count that `from_raw` takes.
    unsafe { Arc::increment_strong_count(ptr) };
    // SAFETY: the pointer came from `Arc::into_raw` and the count taken
    // here was added just above, leaving the handle's own untouched.
    Ok(unsafe { Arc::from_raw(ptr) })
}

/// Drop C's reference to a shared value; NULL is a no-op.
///
/// # Safety
/// `ptr` must be NULL or a live handle from [`arc_handle`] for the same `H`;
/// it is dangling afterwards.
pub(crate) unsafe fn arc_handle_free<H: ArcHandle>(ptr: *const H) {
    if !ptr.is_null() {
        // SAFETY: the handle owns exactly one strong count from
        // `Arc::into_raw`, released exactly once here.
        drop(unsafe { Arc::from_raw(ptr.cast::<H::Inner>()) });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counter(Arc<AtomicUsize>);
    impl Drop for Counter {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct perfplus_test_box {
        _private: [u8; 0],
    }
    impl BoxHandle for perfplus_test_box {
        type Inner = Counter;
    }

    struct perfplus_test_arc {
        _private: [u8; 0],
    }
    impl ArcHandle for perfplus_test_arc {
        type Inner = AtomicUsize;
    }

    #[test]
    fn boxed_handle_is_borrowed_then_freed_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let handle: *mut perfplus_test_box = box_handle(Counter(drops.clone()));
        // SAFETY: `handle` is live and used by this thread only.
        let inner = unsafe { box_handle_ref(handle, "f", "h") }.unwrap();
        assert!(Arc::ptr_eq(&inner.0, &drops));
        // SAFETY: live handle, freed once.
        unsafe { box_handle_free(handle) };
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        // SAFETY: NULL is a documented no-op.
        unsafe { box_handle_free::<perfplus_test_box>(std::ptr::null_mut()) };
    }

    #[test]
    fn null_handle_is_an_error_naming_the_argument() {
        // SAFETY: NULL is refused before any dereference.
        let err = unsafe {
            box_handle_mut::<perfplus_test_box>(std::ptr::null_mut(), "perfplus_node_stop", "node")
        }
        .err()
        .unwrap();
        assert_eq!(err.code, perfplus_result::PERFPLUS_RESULT_NULL_ARGUMENT);
        assert_eq!(err.message, "perfplus_node_stop: argument `node` is NULL");
    }

    #[test]
    fn shared_handle_counts_references() {
        let value = Arc::new(AtomicUsize::new(5));
        let handle: *const perfplus_test_arc = arc_handle(value.clone());
        assert_eq!(Arc::strong_count(&value), 2);
        // SAFETY: `handle` is live.
        let clone = unsafe { arc_handle_clone(handle, "f", "h") }.unwrap();
        assert_eq!(Arc::strong_count(&value), 3);
        drop(clone);
        // SAFETY: live handle, freed once.
        unsafe { arc_handle_free(handle) };
        assert_eq!(Arc::strong_count(&value), 1);
    }

    #[test]
    fn strings_must_be_utf8() {
        let bad = [0x66_u8, 0xff, 0];
        // SAFETY: NUL-terminated local buffer.
        let err = unsafe { arg_str(bad.as_ptr().cast(), "f", "name") }
            .err()
            .unwrap();
        assert_eq!(err.code, perfplus_result::PERFPLUS_RESULT_INVALID_UTF8);
        // SAFETY: NUL-terminated literal.
        let good = unsafe { arg_str(c"node1".as_ptr(), "f", "name") };
        assert_eq!(good.unwrap(), "node1");
    }

    #[test]
    fn required_reference_is_borrowed_or_refused() {
        let value = 3_u64;
        // SAFETY: a live local.
        assert_eq!(*unsafe { arg_ref(&value, "f", "v") }.unwrap(), 3);
        // SAFETY: NULL is refused before any dereference.
        assert!(unsafe { arg_ref::<u64>(std::ptr::null(), "f", "v") }.is_err());
    }

    #[test]
    fn empty_byte_argument_may_be_null() {
        // SAFETY: NULL with length 0 is accepted without dereference.
        assert!(unsafe { arg_bytes(std::ptr::null(), 0, "f", "b") }
            .unwrap()
            .is_empty());
        // SAFETY: NULL with a length is refused before any dereference.
        assert!(unsafe { arg_bytes(std::ptr::null(), 4, "f", "b") }.is_err());
    }

    #[test]
    fn out_parameter_is_written_only_when_asked() {
        let mut slot = 7_u32;
        // SAFETY: `slot` is a live local.
        let out = unsafe { arg_out(&mut slot, "f", "out") }.unwrap();
        out.write(9);
        assert_eq!(slot, 9);
        // SAFETY: NULL is refused before any write.
        assert!(unsafe { arg_out::<u32>(std::ptr::null_mut(), "f", "out") }.is_err());
    }
}
