//! Process plumbing shared by the CMP binaries.
