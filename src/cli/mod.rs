//! The bodies of the `outagewatch` commands, one file per job: [`import`] loads history,
//! [`detect`] scores a CSV offline, [`redetect`] recomputes stored incidents, and [`ops`] prints
//! counts and incidents for operators. Each file holds its command's arguments and its `run`.

pub mod detect;
pub mod import;
pub mod ops;
pub mod redetect;
