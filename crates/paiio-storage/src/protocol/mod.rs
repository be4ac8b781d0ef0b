//! Wire formats of the MaxCompute services paiio speaks, as pure codecs (no HTTP).
pub mod tunnel;
