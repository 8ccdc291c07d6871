//! The knowledge base of an Instance (T7), served by CMP: documents a buyer
//! uploads are chunked, embedded and stored here, and flows search them as a
//! tool through the connector gateway. The runtime never holds a store
//! credential.

pub mod embed;
