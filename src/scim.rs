//! The changes of a run as SCIM 2.0 PATCH requests (RFC 7644 §3.5.2) on
//! `/Groups/{key}`, for identity providers and other SCIM servers.
//!
//! Each request adds and removes at most `batch` members, so no request
//! grows past what servers accept. Sending them all, in the manifest's
//! order, applies the diff. Sending them again changes nothing: adding a
//! member who is there, or removing one who is not, is a no-op.

use crate::diff::GroupChange;
use serde_json::{Value, json};

/// The SCIM message schema of a PATCH body.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// One PATCH request.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchRequest {
    /// The file it is written to, e.g. `00001-sales.json`.
    pub file: String,
    /// The group's key, used as its SCIM id in the path.
    pub group: String,
    /// Members added.
    pub adds: usize,
    /// Members removed.
    pub removes: usize,
    /// The request body.
    pub body: Value,
}

/// The requests for `changes`, group by group in key order, each with at
/// most `batch` member changes (at least 1).
pub fn patch_requests(changes: &[GroupChange], batch: usize) -> Vec<PatchRequest> {
    let batch = batch.max(1);
    let mut out = Vec::new();
    for change in changes.iter().filter(|c| !c.is_empty()) {
        let rows: Vec<(u32, bool)> = change.rows().collect();
        for chunk in rows.chunks(batch) {
            let members = |added: bool| -> Vec<Value> {
                chunk
                    .iter()
                    .filter(|(_, a)| *a == added)
                    .map(|(id, _)| json!({ "value": id.to_string() }))
                    .collect()
            };
            let (adds, removes) = (members(true), members(false));
            let mut operations = Vec::new();
            if !adds.is_empty() {
                operations.push(json!({ "op": "add", "path": "members", "value": adds }));
            }
            if !removes.is_empty() {
                operations.push(json!({ "op": "remove", "path": "members", "value": removes }));
            }
            out.push(PatchRequest {
                file: format!("{:05}-{}.json", out.len() + 1, change.key),
                group: change.key.clone(),
                adds: adds.len(),
                removes: removes.len(),
                body: json!({ "schemas": [PATCH_OP], "Operations": operations }),
            });
        }
    }
    out
}

/// The manifest listing the requests in the order to send them.
pub fn manifest(requests: &[PatchRequest]) -> Value {
    json!({
        "requests": requests
            .iter()
            .map(|r| json!({
                "file": r.file,
                "method": "PATCH",
                "path": format!("/Groups/{}", r.group),
                "group": r.group,
                "adds": r.adds,
                "removes": r.removes,
            }))
            .collect::<Vec<_>>()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use roaring::RoaringBitmap;

    #[test]
    fn batches_hold_at_most_n_changes_and_cover_the_diff() {
        let before: RoaringBitmap = (0..5).collect();
        let after: RoaringBitmap = (3..10).collect();
        let changes = [GroupChange::between("g", &before, &after)];
        let requests = patch_requests(&changes, 4);
        let sizes: Vec<(usize, usize)> = requests.iter().map(|r| (r.adds, r.removes)).collect();
        assert_eq!(sizes, [(1, 3), (4, 0)]);
        assert_eq!(requests[0].file, "00001-g.json");
        assert_eq!(
            requests[0].body,
            json!({
                "schemas": [PATCH_OP],
                "Operations": [
                    { "op": "add", "path": "members", "value": [{ "value": "5" }] },
                    { "op": "remove", "path": "members", "value": [{ "value": "0" }, { "value": "1" }, { "value": "2" }] },
                ]
            })
        );
    }
}
