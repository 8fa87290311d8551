//! Conversions between the wire types and the domain, as free functions: `from_proto` validates
//! what callers send, `to_proto` renders what the domain answers.

pub mod from_proto;
pub mod to_proto;
