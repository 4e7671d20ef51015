//! The panic boundary: every exported body runs inside [`guard`] (or
//! [`guard_value`] for the few functions that cannot fail), so that no
//! unwind ever crosses into C, where it would be undefined behaviour.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::error::{set_last_error, Failure};
use super::result::perfplus_result;

/// Run the body of the exported function `function`.
///
/// `Ok` becomes `PERFPLUS_RESULT_OK`; a [`Failure`] stores its message as the
/// thread's last error and returns its code; a panic stores
/// "`function` panicked: <message>" and returns `PERFPLUS_RESULT_PANIC`.
///
/// The body is asserted unwind-safe: after a panic, the object involved may
/// be inconsistent, and the header says it must then only be freed.
pub(crate) fn guard<F>(function: &'static str, body: F) -> perfplus_result
where
    F: FnOnce() -> Result<(), Failure>,
{
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => perfplus_result::PERFPLUS_RESULT_OK,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.code
        }
        Err(payload) => {
            set_last_error(&format!(
                "{function} panicked: {}",
                panic_message(payload.as_ref())
            ));
            perfplus_result::PERFPLUS_RESULT_PANIC
        }
    }
}

/// Run the body of an exported function that returns a value instead of a
/// result code; a panic returns `on_panic` (and keeps its message).
pub(crate) fn guard_value<T, F>(on_panic: T, body: F) -> T
where
    F: FnOnce() -> T,
{
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            set_last_error(&format!("panic: {}", panic_message(payload.as_ref())));
            on_panic
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted string).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(a panic without a message)"
    }
}

#[cfg(test)]
mod tests {
    use super::super::error::last_error;
    use super::*;

    #[test]
    fn ok_body_returns_ok() {
        assert_eq!(
            guard("perfplus_x", || Ok(())),
            perfplus_result::PERFPLUS_RESULT_OK
        );
    }

    #[test]
    fn failure_keeps_its_code_and_message() {
        let code = guard("perfplus_x", || {
            Err(Failure::new(
                perfplus_result::PERFPLUS_RESULT_TIMEOUT,
                "peer 3 did not answer",
            ))
        });
        assert_eq!(code, perfplus_result::PERFPLUS_RESULT_TIMEOUT);
        assert_eq!(last_error(), "peer 3 did not answer");
    }

    #[test]
    fn panic_becomes_a_code_and_keeps_its_message() {
        let code = guard("perfplus_x", || panic!("page {} out of range", 7));
        assert_eq!(code, perfplus_result::PERFPLUS_RESULT_PANIC);
        assert_eq!(last_error(), "perfplus_x panicked: page 7 out of range");
    }

    #[test]
    fn panic_in_a_value_function_returns_the_fallback() {
        let value = guard_value(-1, || -> i32 { panic!("boom") });
        assert_eq!(value, -1);
        assert_eq!(last_error(), "panic: boom");
    }
}
