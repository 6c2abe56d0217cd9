# Round 4, call 12 (one H100): LoRA with the final code: Llama-3-8B again, and Qwen3-8B (first run) beside HF + peft.
source bench/scripts/gpu_env.sh
L="timeout 170 python3 -m bench.throughput --mode lora --seq 4096 --steps 3 --warmup 2 --baseline none"
$L --model llama3_8b --micro-batches 4 --packs-per-micro-batch 2 --systems ours --out $OUT/h100_8b_lora_k2_ours.json 2>&1 | grep -E '^\{|Error'
$L --model qwen3_8b --micro-batches 4 --packs-per-micro-batch 2 --systems ours --out $OUT/h100_qwen3_8b_lora_k2_ours.json 2>&1 | grep -E '^\{|Error'
$L --model qwen3_8b --micro-batches 8 --packs-per-micro-batch 1 --systems hf --out $OUT/h100_qwen3_8b_lora_k1_hf.json 2>&1 | grep -E '^\{|Error'
