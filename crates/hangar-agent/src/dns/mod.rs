//! Private DNS for machines: the `.internal` and `.flycast` names of each private
//! network (`names.rs`), answered from what the agent knows of its machines. Serving
//! them on the wire at `fdaa::3` with hickory, and recursion for public names, build
//! on this; the store is never asked per lookup.

pub mod names;
