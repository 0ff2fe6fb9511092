//! Copy-on-write layers of 2 MiB blocks: the VHD trees of a simulated SR.
//!
//! Each disk writes into its own leaf layer; snapshots and clones freeze the leaf into a hidden
//! parent shared by two new leaves, as sm does on VHD SRs. A hidden layer left with one child is
//! merged into it and one left with none is dropped, like sm's garbage collector: neither changes
//! any disk's content nor any chain-based block set (a hidden layer with a single child is on
//! exactly the same chains as that child).

use std::collections::{BTreeSet, HashMap, HashSet};

use bytes::{Bytes, BytesMut};

use super::{BLOCK_BYTES, SECTOR_BITMAP_BYTES, SECTOR_BYTES};

/// Identifies a layer inside [`Layers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LayerId(u64);

#[derive(Debug)]
struct Layer {
    parent: Option<LayerId>,
    children: Vec<LayerId>,
    /// A disk writes into this layer; hidden (frozen) layers are never written.
    is_leaf: bool,
    blocks: HashMap<u32, Bytes>,
}

/// Every layer of one storage, indexed by id.
#[derive(Debug, Default)]
pub(crate) struct Layers {
    next_id: u64,
    layers: HashMap<LayerId, Layer>,
}

/// Memory held by the layers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LayerStats {
    pub layers: usize,
    pub unique_blocks: usize,
}

impl Layers {
    /// A new empty leaf, optionally over `parent`.
    pub(crate) fn new_leaf(&mut self, parent: Option<LayerId>) -> LayerId {
        let id = LayerId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        if let Some(parent_layer) = parent.and_then(|parent| self.layers.get_mut(&parent)) {
            parent_layer.children.push(id);
        }
        self.layers.insert(
            id,
            Layer {
                parent,
                children: Vec::new(),
                is_leaf: true,
                blocks: HashMap::new(),
            },
        );
        id
    }

    /// A new leaf holding `blocks`, with no parent (the result of a full copy).
    pub(crate) fn new_root_with(&mut self, blocks: HashMap<u32, Bytes>) -> LayerId {
        let id = self.new_leaf(None);
        if let Some(layer) = self.layers.get_mut(&id) {
            layer.blocks = blocks;
        }
        id
    }

    /// Forks `leaf` for a snapshot or clone: returns the source's new leaf and the new disk's leaf.
    ///
    /// An empty leaf contributes no block to any chain, so it stays the source's leaf and the new
    /// leaf hangs from its parent: repeated snapshots without writes keep chains short.
    pub(crate) fn fork(&mut self, leaf: LayerId) -> (LayerId, LayerId) {
        let (parent, is_empty) = match self.layers.get(&leaf) {
            Some(layer) => (layer.parent, layer.blocks.is_empty()),
            None => (None, true),
        };
        if is_empty {
            return (leaf, self.new_leaf(parent));
        }
        if let Some(layer) = self.layers.get_mut(&leaf) {
            layer.is_leaf = false;
        }
        (self.new_leaf(Some(leaf)), self.new_leaf(Some(leaf)))
    }

    /// Drops a disk's leaf, then collects or merges the hidden layers it leaves behind.
    pub(crate) fn release(&mut self, leaf: LayerId) {
        let Some(layer) = self.layers.remove(&leaf) else {
            return;
        };
        let mut current = layer.parent;
        if let Some(parent) = current {
            self.unlink_child(parent, leaf);
        }
        while let Some(id) = current {
            let Some(layer) = self.layers.get(&id) else {
                return;
            };
            if layer.is_leaf {
                return;
            }
            match layer.children.as_slice() {
                [] => {
                    let parent = layer.parent;
                    self.layers.remove(&id);
                    if let Some(parent) = parent {
                        self.unlink_child(parent, id);
                    }
                    current = parent;
                }
                [only_child] => {
                    let only_child = *only_child;
                    self.merge_into_child(id, only_child);
                    return;
                }
                _ => return,
            }
        }
    }

    fn unlink_child(&mut self, parent: LayerId, child: LayerId) {
        if let Some(layer) = self.layers.get_mut(&parent) {
            layer.children.retain(|id| *id != child);
        }
    }

    /// Folds hidden layer `id` into its only child, which takes its place in the tree.
    fn merge_into_child(&mut self, id: LayerId, child: LayerId) {
        let Some(hidden) = self.layers.remove(&id) else {
            return;
        };
        let grandparent = hidden.parent;
        if let Some(child_layer) = self.layers.get_mut(&child) {
            let mut merged = hidden.blocks;
            merged.extend(child_layer.blocks.drain());
            child_layer.blocks = merged;
            child_layer.parent = grandparent;
        }
        if let Some(grandparent_layer) = grandparent.and_then(|gp| self.layers.get_mut(&gp)) {
            for slot in &mut grandparent_layer.children {
                if *slot == id {
                    *slot = child;
                }
            }
        }
    }

    /// The block as seen from `leaf` (the nearest layer holding it), `None` when no layer does.
    pub(crate) fn block(&self, leaf: LayerId, index: u32) -> Option<&Bytes> {
        let mut current = Some(leaf);
        while let Some(layer) = current.and_then(|id| self.layers.get(&id)) {
            if let Some(block) = layer.blocks.get(&index) {
                return Some(block);
            }
            current = layer.parent;
        }
        None
    }

    /// Layers from `leaf` up to the root.
    pub(crate) fn chain(&self, leaf: LayerId) -> Vec<LayerId> {
        let mut chain = Vec::new();
        let mut current = Some(leaf);
        while let Some(id) = current {
            let Some(layer) = self.layers.get(&id) else {
                break;
            };
            chain.push(id);
            current = layer.parent;
        }
        chain
    }

    fn blocks_of<'a>(&'a self, ids: impl IntoIterator<Item = &'a LayerId>) -> BTreeSet<u32> {
        ids.into_iter()
            .filter_map(|id| self.layers.get(id))
            .flat_map(|layer| layer.blocks.keys().copied())
            .collect()
    }

    /// Blocks allocated in any layer of `leaf`'s chain.
    pub(crate) fn allocated(&self, leaf: LayerId) -> BTreeSet<u32> {
        self.blocks_of(&self.chain(leaf))
    }

    /// Blocks allocated only in the leaf layer.
    pub(crate) fn leaf_block_count(&self, leaf: LayerId) -> usize {
        self.layers.get(&leaf).map_or(0, |layer| layer.blocks.len())
    }

    /// Blocks allocated in a layer on exactly one of the two chains (vhd-tool's `--relative-to`).
    pub(crate) fn symmetric_difference(&self, leaf: LayerId, base: LayerId) -> BTreeSet<u32> {
        let ours: HashSet<LayerId> = self.chain(leaf).into_iter().collect();
        let theirs: HashSet<LayerId> = self.chain(base).into_iter().collect();
        self.blocks_of(ours.symmetric_difference(&theirs))
    }

    /// The consolidated view of `leaf`: every allocated block, shared, not copied.
    pub(crate) fn flatten(&self, leaf: LayerId) -> HashMap<u32, Bytes> {
        let mut blocks = HashMap::new();
        for id in self.chain(leaf) {
            if let Some(layer) = self.layers.get(&id) {
                for (index, block) in &layer.blocks {
                    blocks.entry(*index).or_insert_with(|| block.clone());
                }
            }
        }
        blocks
    }

    /// Stores a whole block in `leaf`, sharing the buffer.
    pub(crate) fn put_block(&mut self, leaf: LayerId, index: u32, block: Bytes) {
        if let Some(layer) = self.layers.get_mut(&leaf) {
            layer.blocks.insert(index, block);
        }
    }

    /// Takes block `index` of `leaf` for modification: in place when nothing else shares the
    /// buffer, else a copy of the block as the chain shows it (zeros when unallocated).
    fn take_for_write(&mut self, leaf: LayerId, index: u32) -> BytesMut {
        let own = self
            .layers
            .get_mut(&leaf)
            .and_then(|layer| layer.blocks.remove(&index));
        if let Some(block) = own {
            return block
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        }
        let parent = self.layers.get(&leaf).and_then(|layer| layer.parent);
        match parent.and_then(|parent| self.block(parent, index)) {
            Some(block) => BytesMut::from(&block[..]),
            None => BytesMut::zeroed(BLOCK_BYTES),
        }
    }

    /// Writes `data` at `offset_in_block` of block `index`; the caller keeps it inside the block.
    pub(crate) fn write(&mut self, leaf: LayerId, index: u32, offset_in_block: usize, data: &[u8]) {
        if offset_in_block == 0 && data.len() == BLOCK_BYTES {
            self.put_block(leaf, index, Bytes::copy_from_slice(data));
            return;
        }
        let mut block = self.take_for_write(leaf, index);
        let end = offset_in_block.saturating_add(data.len());
        if let Some(target) = block.get_mut(offset_in_block..end) {
            target.copy_from_slice(data);
        }
        self.put_block(leaf, index, block.freeze());
    }

    /// Writes the sectors of `data` (a whole block) whose bit is set in `bitmap` (512 bytes,
    /// sector `n` at byte `n >> 3`, mask `0x80 >> (n & 7)`); the others keep their content.
    pub(crate) fn write_sectors(&mut self, leaf: LayerId, index: u32, data: &Bytes, bitmap: &[u8]) {
        if bitmap.len() == SECTOR_BITMAP_BYTES && bitmap.iter().all(|byte| *byte == 0xFF) {
            self.put_block(leaf, index, data.clone());
            return;
        }
        if bitmap.iter().all(|byte| *byte == 0) {
            return;
        }
        let mut block = self.take_for_write(leaf, index);
        for (first, end) in set_runs(bitmap) {
            let range = first.saturating_mul(SECTOR_BYTES)..end.saturating_mul(SECTOR_BYTES);
            if let (Some(target), Some(source)) = (block.get_mut(range.clone()), data.get(range)) {
                target.copy_from_slice(source);
            }
        }
        self.put_block(leaf, index, block.freeze());
    }

    pub(crate) fn stats(&self) -> LayerStats {
        let unique: HashSet<*const u8> = self
            .layers
            .values()
            .flat_map(|layer| layer.blocks.values().map(|block| block.as_ptr()))
            .collect();
        LayerStats {
            layers: self.layers.len(),
            unique_blocks: unique.len(),
        }
    }
}

/// Runs `[first, end)` of set bits in an MSB-first bitmap.
pub(crate) fn set_runs(bitmap: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    let bit_count = bitmap.len().saturating_mul(8);
    for bit in 0..bit_count {
        let set = bitmap
            .get(bit >> 3)
            .is_some_and(|byte| byte & (0x80 >> (bit & 7)) != 0);
        match (set, start) {
            (true, None) => start = Some(bit),
            (false, Some(first)) => {
                runs.push((first, bit));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(first) = start {
        runs.push((first, bit_count));
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_runs_follow_the_vhd_bit_order() {
        // Sectors 0-7 are byte 0 = 0xFF; sector 8 is byte 1 mask 0x80; sector 4095 is byte 511 mask 0x01.
        let mut bitmap = vec![0u8; 512];
        bitmap[0] = 0xFF;
        bitmap[1] = 0x80;
        bitmap[511] = 0x01;
        assert_eq!(set_runs(&bitmap), vec![(0, 9), (4095, 4096)]);
    }

    #[test]
    fn hidden_layers_merge_and_vanish() {
        let mut layers = Layers::default();
        let leaf = layers.new_leaf(None);
        layers.put_block(leaf, 0, Bytes::from(vec![1u8; BLOCK_BYTES]));
        let (source, snapshot) = layers.fork(leaf);
        assert_eq!(layers.chain(source).len(), 2);
        layers.release(snapshot);
        // The hidden parent had one child left: merged, the source is a single layer again.
        assert_eq!(layers.chain(source), vec![source]);
        assert_eq!(layers.block(source, 0).map(|block| block[0]), Some(1));
        layers.release(source);
        assert_eq!(layers.stats().layers, 0);
    }
}
