//! Keyed digests of members, to tell unchanged groups without reading them.

use super::BlobDigest;
use roaring::RoaringBitmap;
use std::io::Write;

/// The secret a state's member digests are keyed with.
pub(super) struct DigestSecret(pub(super) Box<[u8]>);

impl DigestSecret {
    /// The length of XXH3's default secret.
    const BYTES: usize = 192;

    pub(super) fn random() -> Result<DigestSecret, getrandom::Error> {
        let mut secret = vec![0; Self::BYTES].into_boxed_slice();
        getrandom::fill(&mut secret)?;
        Ok(DigestSecret(secret))
    }

    /// The digest of `members`' portable bytes, fed to the hash as they are
    /// written, so hashing an unchanged group allocates nothing.
    pub(super) fn digest_of(&self, members: &RoaringBitmap) -> BlobDigest {
        let mut hasher = DigestWriter(
            twox_hash::xxhash3_128::Hasher::with_seed_and_secret(0, self.0.clone())
                .expect("the secret is as long as XXH3's default one"),
        );
        members.serialize_into(&mut hasher).expect("hashing cannot fail");
        hasher.0.finish_128()
    }
}

pub(super) struct DigestWriter(twox_hash::xxhash3_128::Hasher);

impl Write for DigestWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(super) fn serialize(members: &RoaringBitmap) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(members.serialized_size());
    members
        .serialize_into(&mut bytes)
        .expect("writing to a Vec cannot fail");
    bytes
}
