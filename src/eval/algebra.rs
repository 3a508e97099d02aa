//! Group trees as bitmap algebra over the atoms: `and` an intersection,
//! `or` a union, `a and not b` a difference, with no complement of every
//! user built where a difference does.

use super::plan::Node;
use rayon::prelude::*;
use roaring::{MultiOps, RoaringBitmap};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn atom_ids(node: &Node) -> Vec<usize> {
    let mut out = Vec::new();
    node.for_each_leaf(|leaf| {
        if let Node::Atom(a) = leaf {
            out.push(*a);
        }
    });
    out.sort_unstable();
    out.dedup();
    out
}

/// What a tree is combined against: its table's rows, evaluated atoms (and
/// how to evaluate one not held, whose rows may outlive the context), and
/// the groups finished so far.
pub(super) struct Context<'a, 'i: 'a> {
    pub(super) universe: &'a RoaringBitmap,
    pub(super) atoms: &'a [Option<(Arc<RoaringBitmap>, Duration)>],
    pub(super) leaf: &'a (dyn Fn(usize) -> Cow<'i, RoaringBitmap> + Sync),
    pub(super) groups: &'a [Arc<RoaringBitmap>],
    pub(super) statics: &'a BTreeMap<String, RoaringBitmap>,
}

impl<'a> Context<'a, '_> {
    /// The rows of `node`: shared when they are held (an evaluated atom, a
    /// group), else made.
    pub(super) fn combine(&self, node: &Node) -> Arc<RoaringBitmap> {
        match node {
            Node::Atom(a) if let Some((rows, _)) = &self.atoms[*a] => Arc::clone(rows),
            Node::Group(g) => Arc::clone(&self.groups[*g]),
            _ => Arc::new(self.rows_of(node).into_owned()),
        }
    }

    /// The rows of `node`, borrowed when they are held (an evaluated atom,
    /// a group, the universe): operands are combined where they lie, never
    /// copied first. At millions of rows a copy costs about as much as the
    /// operation itself.
    pub(super) fn rows_of(&self, node: &Node) -> Cow<'a, RoaringBitmap> {
        match node {
            Node::Const(true) => Cow::Borrowed(self.universe),
            Node::Const(false) => Cow::Owned(RoaringBitmap::new()),
            Node::Atom(a) => match &self.atoms[*a] {
                Some((rows, _)) => Cow::Borrowed(rows.as_ref()),
                None => (self.leaf)(*a),
            },
            Node::Group(g) => Cow::Borrowed(self.groups[*g].as_ref()),
            Node::Static(key) => self
                .statics
                .get(key)
                .map_or_else(|| Cow::Owned(RoaringBitmap::new()), Cow::Borrowed),
            Node::Not(inner) => Cow::Owned(self.universe - self.rows_of(inner).as_ref()),
            Node::Or(nodes) if nodes.iter().any(|n| matches!(n, Node::Not(_))) => {
                // `not a or b` is the complement of `a and not b`: one
                // complement of a set that is often small, where each
                // negated operand would be a complement over every row.
                let (negated, positive) = split_negated(nodes);
                Cow::Owned(self.universe - &self.rows_in_all_but(negated, positive))
            }
            Node::Or(nodes) => Cow::Owned(self.rows_of_each(nodes).iter().map(AsRef::as_ref).union()),
            Node::And(nodes) => {
                let (negated, positive) = split_negated(nodes);
                Cow::Owned(self.rows_in_all_but(positive, negated))
            }
        }
    }

    /// The rows in every node of `all` (every row when there is none) and
    /// in none of `none`: the intersection first, then each of `none`
    /// subtracted, and evaluated, only while rows are left. `a and not b`
    /// is `a - b`, with no complement built.
    fn rows_in_all_but(&self, all: Vec<&Node>, none: Vec<&Node>) -> RoaringBitmap {
        let mut out = if all.is_empty() {
            self.universe.clone()
        } else {
            intersection(self.rows_of_each(all))
        };
        for node in none {
            if out.is_empty() {
                break;
            }
            out -= self.rows_of(node).as_ref();
        }
        out
    }

    /// Each node's rows, side by side: a node's atoms may be evaluated here
    /// rather than in the atom phases.
    fn rows_of_each<'n>(&self, nodes: impl IntoParallelIterator<Item = &'n Node>) -> Vec<Cow<'a, RoaringBitmap>> {
        nodes.into_par_iter().map(|n| self.rows_of(n)).collect()
    }
}

/// The operands of `nodes` under a `not`, and the others.
fn split_negated(nodes: &[Node]) -> (Vec<&Node>, Vec<&Node>) {
    let mut negated = Vec::new();
    let mut others = Vec::new();
    for node in nodes {
        match node {
            Node::Not(inner) => negated.push(inner.as_ref()),
            other => others.push(other),
        }
    }
    (negated, others)
}

/// The rows in every operand. The smallest goes first, so that each step
/// works on at most its rows; two borrowed operands are intersected into a
/// new bitmap, so that neither is copied whole.
fn intersection(mut operands: Vec<Cow<'_, RoaringBitmap>>) -> RoaringBitmap {
    operands.sort_by_cached_key(|rows| rows.len());
    let mut operands = operands.into_iter();
    let mut out = match (operands.next(), operands.next()) {
        (None, _) => return RoaringBitmap::new(),
        (Some(only), None) => return only.into_owned(),
        (Some(Cow::Owned(mut first)), Some(second)) => {
            first &= second.as_ref();
            first
        }
        (Some(Cow::Borrowed(first)), Some(second)) => first & second.as_ref(),
    };
    for rows in operands {
        if out.is_empty() {
            break;
        }
        out &= rows.as_ref();
    }
    out
}
