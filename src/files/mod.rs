//! Files from the user's side: reading untrusted inputs within bounds, writing outputs
//! atomically, and checking before a run starts that no output can destroy an input.

mod outputs;
mod read;
mod write;

pub use outputs::{check_outputs, same_file, NamedPath};
pub use read::{checked_len, open_regular, read_bounded, read_text_bounded, reserve};
pub use write::{remove_stale_temporaries, temporary_path, write_atomically};
