//! Reading stored bitmaps: whole, cut into parts, or as a delta on a base.

use super::{BLOB_BASES, BLOB_PARTS, BLOB_PLACES, BLOBS, MAX_DELTA_CHAIN, State, StateError, packs};
use roaring::RoaringBitmap;

impl State {
    /// The bytes of a stored bitmap, which must be there.
    pub(super) fn whole_blob_bytes(
        &self,
        read: &redb::ReadTransaction,
        blob: u64,
        what: &str,
    ) -> Result<Vec<u8>, StateError> {
        self.blob_bytes(read, blob)?
            .ok_or_else(|| self.corrupt(format_args!("{what} points at a missing bitmap")))
    }

    /// The base of a delta blob and the length of its chain; `None` for a
    /// whole bitmap.
    pub(super) fn base_of(&self, read: &redb::ReadTransaction, blob: u64) -> Result<Option<(u64, u32)>, StateError> {
        match read.open_table(BLOB_BASES) {
            Ok(bases) => Ok(bases.get(blob).map_err(|e| self.error(e))?.map(|b| b.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The members a blob stands for: its whole bitmap, or its chain's whole
    /// bitmap XOR every delta up to it. `what` names it in errors.
    pub(super) fn blob_members(
        &self,
        read: &redb::ReadTransaction,
        blob: u64,
        what: &str,
    ) -> Result<RoaringBitmap, StateError> {
        let mut deltas = Vec::new();
        let mut whole = blob;
        while let Some((base, _)) = self.base_of(read, whole)? {
            if deltas.len() > MAX_DELTA_CHAIN as usize {
                return Err(self.corrupt(format_args!("{what}: its chain of deltas does not end")));
            }
            deltas.push(whole);
            whole = base;
        }
        let bitmap = |blob: u64| -> Result<RoaringBitmap, StateError> {
            let bytes = self.whole_blob_bytes(read, blob, what)?;
            RoaringBitmap::deserialize_from(bytes.as_slice()).map_err(|e| self.corrupt(format_args!("{what}: {e}")))
        };
        let mut members = bitmap(whole)?;
        for delta in deltas.into_iter().rev() {
            members ^= bitmap(delta)?;
        }
        Ok(members)
    }

    /// A stored bitmap's bytes: from its pack, its parts in order (version
    /// 2 and 3), or the whole bitmap a version-1 state stored.
    pub(super) fn blob_bytes(&self, read: &redb::ReadTransaction, blob: u64) -> Result<Option<Vec<u8>>, StateError> {
        match read.open_table(BLOB_PLACES) {
            Ok(places) => {
                if let Some(place) = places.get(blob).map_err(|e| self.error(e))? {
                    let place = place.value();
                    return packs::read_place(&self.dir, place)
                        .map(Some)
                        .map_err(|e| self.corrupt(format_args!("bitmap {blob} in pack {}: {e}", place.0)));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.error(e)),
        }
        let mut bytes = Vec::new();
        match read.open_table(BLOB_PARTS) {
            Ok(parts) => {
                for part in parts.range((blob, 0)..=(blob, u32::MAX)).map_err(|e| self.error(e))? {
                    let (_, value) = part.map_err(|e| self.error(e))?;
                    bytes.extend_from_slice(value.value());
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.error(e)),
        }
        if !bytes.is_empty() {
            return Ok(Some(bytes));
        }
        match read.open_table(BLOBS) {
            Ok(blobs) => Ok(blobs.get(blob).map_err(|e| self.error(e))?.map(|v| v.value().to_vec())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }
}
