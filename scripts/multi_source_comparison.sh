#!/usr/bin/env bash
# ProtoNet, CNAPs, Simple CNAPs and MAML on the same fixed multi-source episodes
# (configs/experiment/multi_source.yaml: kanji trains, the Omniglot sample is held out).
# CNAPs and Simple CNAPs adapt ProtoNet's encoder, frozen, as the papers adapt a pretrained one.
# MAML adapts with one step at test as in training: its three test steps at inner_lr 2.0 (the
# Omniglot 5-way rate) overshoot on these episodes of up to 20 ways.
#   bash scripts/multi_source_comparison.sh ../shared/data/omniglot outputs/multi_source
#   bash scripts/multi_source_comparison.sh ../shared/data/omniglot outputs/all dataset.held_out=[]
set -euo pipefail
omniglot=${1:?the folder holding images_background_small1 and _small2}
out=${2:-outputs/multi_source}
common=(experiment=multi_source "dataset.sources.omniglot.root=$omniglot" "${@:3}")
metarun "${common[@]}" algorithm=protonet hydra.run.dir="$out/protonet"
for learner in simple_cnaps cnaps; do
  metarun "${common[@]}" algorithm=$learner pretrained.from="$out/protonet" pretrained.freeze=true \
    trainer.max_steps=150 trainer.val_every=50 hydra.run.dir="$out/$learner"
done
metarun "${common[@]}" algorithm=maml algorithm.meta_batch_size=4 algorithm.test_inner_steps=1 \
  trainer.max_steps=600 trainer.val_every=150 hydra.run.dir="$out/maml"
