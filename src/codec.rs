//! The one bincode configuration every encode and decode uses: the wire,
//! the journal, the run store, the registry and the Raft log.
//!
//! It is bincode's standard layout with a limit on what one decode may
//! claim. Without a limit, bincode allocates whatever a length prefix
//! says before reading the elements, so ten bytes claiming a string of
//! 2^60 bytes abort the process. With it, such a frame is a clear
//! `LimitExceeded` error. The limit is far above any value Symphony
//! moves in one message or record (values above 1 MiB travel as chunked
//! blobs between nodes), so it only ever refuses garbage.
//!
//! Nesting is bounded separately, by [`crate::value::MAX_DEPTH`].

use bincode::config::{Configuration, Limit, LittleEndian, Varint};

/// The most memory one decode may claim: 1 GiB.
pub const DECODE_LIMIT: usize = 1 << 30;

/// The configuration: standard layout (little endian, varints), with
/// [`DECODE_LIMIT`].
pub type Config = Configuration<LittleEndian, Varint, Limit<DECODE_LIMIT>>;

/// The configuration value to hand to bincode.
pub const fn config() -> Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn the_limit_does_not_change_the_layout() {
        let value = Value::List(vec![Value::from("x"), Value::Int(-3)]);
        let ours = bincode::encode_to_vec(&value, config()).unwrap();
        let standard = bincode::encode_to_vec(&value, bincode::config::standard()).unwrap();
        assert_eq!(ours, standard);
    }

    #[test]
    fn a_huge_length_prefix_is_an_error_not_an_abort() {
        // A string (variant 4) claiming 2^60 bytes and a list (variant 6)
        // claiming 2^40 elements; 253 says a u64 length follows.
        for (variant, claimed) in [(4_u8, 1_u64 << 60), (6, 1 << 40)] {
            let mut frame = vec![variant, 253];
            frame.extend_from_slice(&claimed.to_le_bytes());
            let err = bincode::decode_from_slice::<Value, _>(&frame, config()).unwrap_err();
            assert!(
                matches!(err, bincode::error::DecodeError::LimitExceeded),
                "{err}"
            );
        }
    }
}
