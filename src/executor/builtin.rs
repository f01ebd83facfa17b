//! The `builtin/*` executors: small tasks that run inside the node, for
//! benchmarks, tests and examples.
//!
//! They are stateless: whatever depends on the attempt (`builtin/fail`) reads
//! it from the [`AttemptContext`], so behaviour survives a restart.

use std::time::Duration;

use async_trait::async_trait;

use super::fields::{fields, missing, wrong};
use super::{AttemptContext, Executor, TaskError};
use crate::value::{Map, Value};

/// `builtin/noop`: outputs null and ignores its input.
///
/// On the hot path of the throughput benchmark: it allocates nothing beyond
/// the boxed future that [`Executor::execute`] returns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

#[async_trait]
impl Executor for Noop {
    async fn execute(&self, _ctx: &AttemptContext, _input: Value) -> Result<Value, TaskError> {
        Ok(Value::Null)
    }
}

/// `builtin/echo`: outputs its `with` value unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

#[async_trait]
impl Executor for Echo {
    async fn execute(&self, _ctx: &AttemptContext, input: Value) -> Result<Value, TaskError> {
        Ok(input)
    }
}

/// `builtin/sleep`: waits for `duration`, then outputs null.
///
/// `duration` is a string such as `"200ms"` or `"2s"` (humantime syntax) or
/// an integer number of milliseconds. Dropping the attempt ends the wait.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sleep;

#[async_trait]
impl Executor for Sleep {
    async fn execute(&self, _ctx: &AttemptContext, input: Value) -> Result<Value, TaskError> {
        let with = fields("builtin/sleep", &input, &["duration"])?;
        let duration = duration_field(with, "duration")?;
        tokio::time::sleep(duration).await;
        Ok(Value::Null)
    }
}

/// A duration given as humantime text or as integer milliseconds.
fn duration_field(with: &Map, field: &str) -> Result<Duration, TaskError> {
    const WHAT: &str = "a duration such as \"200ms\" or \"2s\", or an integer of milliseconds";
    match with.get(field) {
        None => Err(missing(field, WHAT)),
        Some(Value::String(text)) => humantime::parse_duration(text.trim()).map_err(|e| {
            TaskError::bad_input(format!(
                "field \"{field}\": invalid duration \"{text}\": {e}"
            ))
        }),
        Some(Value::Int(ms)) if *ms >= 0 => Ok(Duration::from_millis(ms.unsigned_abs())),
        Some(other) => Err(wrong(field, WHAT, other)),
    }
}

/// `builtin/fail`: fails attempts `1..=times`, then outputs
/// `{attempts: K}` where K is the attempt that succeeded.
///
/// Fields: `times` (non-negative integer, default 1), `class` (the error
/// class, default `"fail"`), `retryable` (default true). It counts with
/// [`AttemptContext::attempt`], so it keeps no state and behaves the same
/// after a restart.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fail;

#[async_trait]
impl Executor for Fail {
    async fn execute(&self, ctx: &AttemptContext, input: Value) -> Result<Value, TaskError> {
        let with = fields("builtin/fail", &input, &["times", "class", "retryable"])?;
        let times = match with.get("times") {
            None => 1,
            Some(v) => v
                .as_i64()
                .filter(|n| *n >= 0)
                .ok_or_else(|| wrong("times", "a non-negative integer", v))?,
        };
        let class = match with.get("class") {
            None => "fail",
            Some(Value::String(s)) if !s.is_empty() => s.as_str(),
            Some(other) => return Err(wrong("class", "a non-empty string", other)),
        };
        let retryable = match with.get("retryable") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(wrong("retryable", "a boolean", other)),
        };
        let attempt = ctx.attempt;
        if i64::from(attempt) <= times {
            return Err(TaskError {
                class: class.to_owned(),
                message: format!(
                    "attempt {attempt} fails on purpose (builtin/fail fails attempts 1 to {times})"
                ),
                retryable,
            });
        }
        let mut out = Map::new();
        out.insert("attempts".to_owned(), Value::Int(i64::from(attempt)));
        Ok(Value::Map(out))
    }
}

/// `builtin/sum`: outputs the sum of `values`, a list of numbers: an integer
/// when every value is one, else a float.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sum;

#[async_trait]
impl Executor for Sum {
    async fn execute(&self, _ctx: &AttemptContext, input: Value) -> Result<Value, TaskError> {
        let with = fields("builtin/sum", &input, &["values"])?;
        let values = match with.get("values") {
            None => return Err(missing("values", "a list of numbers")),
            Some(Value::List(values)) => values,
            Some(other) => return Err(wrong("values", "a list of numbers", other)),
        };
        sum(values)
    }
}

/// `builtin/bytes`: outputs `size` bytes of deterministic filler (byte `i`
/// is `(i * 31 + 7) mod 256`): test data for moving large values between
/// nodes. At most 1 GiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes;

/// Largest `size` `builtin/bytes` makes.
const BYTES_MAX: i64 = 1 << 30;

#[async_trait]
impl Executor for Bytes {
    async fn execute(&self, _ctx: &AttemptContext, input: Value) -> Result<Value, TaskError> {
        let with = fields("builtin/bytes", &input, &["size"])?;
        let size = match with.get("size") {
            None => return Err(missing("size", "a number of bytes")),
            Some(Value::Int(n)) if (0..=BYTES_MAX).contains(n) => *n as usize,
            Some(other) => return Err(wrong("size", "a number of bytes up to 1 GiB", other)),
        };
        Ok(Value::Bytes(
            (0..size).map(|i| (i.wrapping_mul(31) + 7) as u8).collect(),
        ))
    }
}

fn sum(values: &[Value]) -> Result<Value, TaskError> {
    // i128 cannot overflow on fewer than 2^64 i64 terms.
    let mut ints: i128 = 0;
    let mut floats = 0.0_f64;
    let mut all_ints = true;
    for (i, value) in values.iter().enumerate() {
        match value {
            Value::Int(n) => {
                ints += i128::from(*n);
                floats += *n as f64;
            }
            Value::Float(f) => {
                all_ints = false;
                floats += f;
            }
            other => return Err(wrong(&format!("values[{i}]"), "a number", other)),
        }
    }
    if !all_ints {
        return Ok(Value::Float(floats));
    }
    i64::try_from(ints).map(Value::Int).map_err(|_| {
        TaskError::bad_input("field \"values\": the sum does not fit in a 64-bit integer")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(attempt: u32) -> AttemptContext {
        AttemptContext {
            run_id: "r1".into(),
            task_id: "t".into(),
            item: None,
            attempt,
            idempotency_key: "r1/t".into(),
            uses: "builtin/test".into(),
        }
    }

    fn with(pairs: &[(&str, Value)]) -> Value {
        Value::Map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    #[tokio::test]
    async fn noop_outputs_null_whatever_the_input() {
        let out = Noop.execute(&ctx(1), with(&[("x", 1.into())])).await;
        assert_eq!(out, Ok(Value::Null));
        assert_eq!(Noop.execute(&ctx(1), Value::Null).await, Ok(Value::Null));
    }

    #[tokio::test]
    async fn echo_returns_its_input() {
        let input = with(&[("a", 1.into()), ("b", Value::List(vec!["x".into()]))]);
        assert_eq!(Echo.execute(&ctx(1), input.clone()).await, Ok(input));
    }

    #[tokio::test]
    async fn sleep_takes_text_or_milliseconds() {
        let start = tokio::time::Instant::now();
        Sleep
            .execute(&ctx(1), with(&[("duration", "30ms".into())]))
            .await
            .unwrap();
        Sleep
            .execute(&ctx(1), with(&[("duration", 20.into())]))
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn sleep_is_cancelled_by_drop() {
        let start = std::time::Instant::now();
        let input = with(&[("duration", "1h".into())]);
        let ctx = ctx(1);
        let run = Sleep.execute(&ctx, input);
        let res = tokio::time::timeout(Duration::from_millis(10), run).await;
        assert!(res.is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn sleep_rejects_bad_durations() {
        let err = Sleep.execute(&ctx(1), Value::Null).await.unwrap_err();
        assert_eq!(err.class, "input");
        assert!(err.message.starts_with("missing field \"duration\""));

        let err = Sleep
            .execute(&ctx(1), with(&[("duration", "soon".into())]))
            .await
            .unwrap_err();
        assert!(
            err.message
                .starts_with("field \"duration\": invalid duration \"soon\""),
            "{}",
            err.message
        );

        let err = Sleep
            .execute(&ctx(1), with(&[("duration", (-5).into())]))
            .await
            .unwrap_err();
        assert!(err.message.contains("got int -5"), "{}", err.message);

        let err = Sleep
            .execute(&ctx(1), with(&[("duration", Value::List(vec![]))]))
            .await
            .unwrap_err();
        assert!(err.message.ends_with("got list"), "{}", err.message);
    }

    #[tokio::test]
    async fn fail_fails_the_first_attempts_then_reports_the_attempt() {
        let input = with(&[("times", 2.into()), ("class", "flaky".into())]);
        for attempt in 1..=2 {
            let err = Fail
                .execute(&ctx(attempt), input.clone())
                .await
                .unwrap_err();
            assert_eq!(err.class, "flaky");
            assert!(err.retryable);
            assert!(
                err.message.contains(&format!("attempt {attempt} ")),
                "{}",
                err.message
            );
        }
        let out = Fail.execute(&ctx(3), input).await.unwrap();
        assert_eq!(out, with(&[("attempts", 3.into())]));
    }

    #[tokio::test]
    async fn fail_defaults_to_one_retryable_failure_of_class_fail() {
        let err = Fail.execute(&ctx(1), Value::Null).await.unwrap_err();
        assert_eq!((err.class.as_str(), err.retryable), ("fail", true));
        let out = Fail.execute(&ctx(2), Value::Null).await.unwrap();
        assert_eq!(out.get("attempts"), Some(&Value::Int(2)));
    }

    #[tokio::test]
    async fn fail_can_be_non_retryable_or_never_fail() {
        let err = Fail
            .execute(&ctx(1), with(&[("retryable", false.into())]))
            .await
            .unwrap_err();
        assert!(!err.retryable);
        let out = Fail.execute(&ctx(1), with(&[("times", 0.into())])).await;
        assert_eq!(out, Ok(with(&[("attempts", 1.into())])));
    }

    #[tokio::test]
    async fn fail_rejects_bad_fields() {
        for (input, field) in [
            (with(&[("times", (-1).into())]), "times"),
            (with(&[("times", "two".into())]), "times"),
            (with(&[("class", 3.into())]), "class"),
            (with(&[("class", "".into())]), "class"),
            (with(&[("retryable", "no".into())]), "retryable"),
        ] {
            let err = Fail.execute(&ctx(1), input).await.unwrap_err();
            assert_eq!(err.class, "input");
            assert!(
                err.message.starts_with(&format!("field \"{field}\"")),
                "{}",
                err.message
            );
        }
    }

    #[tokio::test]
    async fn sum_keeps_ints_as_ints() {
        let input = with(&[("values", Value::List(vec![1.into(), 2.into(), 39.into()]))]);
        assert_eq!(Sum.execute(&ctx(1), input).await, Ok(Value::Int(42)));
        let empty = with(&[("values", Value::List(vec![]))]);
        assert_eq!(Sum.execute(&ctx(1), empty).await, Ok(Value::Int(0)));
    }

    #[tokio::test]
    async fn sum_of_mixed_numbers_is_a_float() {
        let input = with(&[("values", Value::List(vec![1.into(), 0.5.into()]))]);
        assert_eq!(Sum.execute(&ctx(1), input).await, Ok(Value::Float(1.5)));
    }

    #[tokio::test]
    async fn sum_names_the_bad_index() {
        let input = with(&[("values", Value::List(vec![1.into(), 2.into(), "3".into()]))]);
        let err = Sum.execute(&ctx(1), input).await.unwrap_err();
        assert_eq!(err.class, "input");
        assert_eq!(
            err.message,
            "field \"values[2]\": expected a number, got string \"3\""
        );
    }

    #[tokio::test]
    async fn sum_reports_overflow_and_missing_values() {
        let input = with(&[("values", Value::List(vec![i64::MAX.into(), 1.into()]))]);
        let err = Sum.execute(&ctx(1), input).await.unwrap_err();
        assert!(err.message.contains("64-bit"), "{}", err.message);
        let err = Sum.execute(&ctx(1), Value::Null).await.unwrap_err();
        assert_eq!(err.message, "missing field \"values\" (a list of numbers)");
        let err = Sum
            .execute(&ctx(1), with(&[("values", 3.into())]))
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            "field \"values\": expected a list of numbers, got int 3"
        );
    }
}
