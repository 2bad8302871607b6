# Writes the GGUFs other test areas use (ctest fixture "oracle_ggufs"):
#   ${OUT}/oracle/<config>-<recipe>.gguf      f32 and q8 for every oracle config, q2/q4 for tiny-q
#   ${OUT}/oracle/<config>-<recipe>-deq.gguf  the same with every tensor dequantized to F32
#   ${OUT}/synth/tiny-real-vocab.gguf         tiny synthetic model (q8) with the real tokenizer
#   ${OUT}/synth/tiny-a-real-vocab.gguf       random weights of tiny-a's shapes, real tokenizer
# tiny-b's q_lora_rank 48 and moe_inter_dim 16 do not fit Q8_0 blocks, so its q8 file stores
# those tensors as F16 (--f16-fallback).
# tiny-a is in the repository (DATA); tiny-b and tiny-q come from the extended data (SHARED) and
# are left out, with a note, where it is absent: the tests that need them skip themselves.
# Usage: cmake -DQUANTIZE=... -DDATA=... -DSHARED=... -DOUT=... -DCONFIGS=... -DTOKENIZER=... -P this
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}${err}")
  endif()
endfunction()

file(MAKE_DIRECTORY ${OUT}/oracle ${OUT}/synth)
foreach(cfg tiny-a tiny-b tiny-q)
  set(src ${DATA}/oracle/${cfg})
  if(NOT EXISTS ${src}/model.safetensors)
    set(src ${SHARED}/oracle/${cfg})
  endif()
  if(NOT EXISTS ${src}/model.safetensors)
    message(STATUS "extended test data absent: ${src}; ${cfg} GGUFs not written, its tests skip")
    continue()
  endif()
  set(recipes f32 q8)
  if(cfg STREQUAL "tiny-q")
    list(APPEND recipes q2 q4)
  endif()
  foreach(r ${recipes})
    set(extra)
    if(cfg STREQUAL "tiny-b" AND NOT r STREQUAL "f32")
      set(extra --f16-fallback)
    endif()
    set(gguf ${OUT}/oracle/${cfg}-${r}.gguf)
    run(${QUANTIZE} --hf ${src} --out ${gguf} --recipe ${r} ${extra})
    run(${QUANTIZE} --dequantize ${gguf} ${OUT}/oracle/${cfg}-${r}-deq.gguf)
  endforeach()
endforeach()
run(${QUANTIZE} --synthetic ${CONFIGS}/tiny-synth.json --out ${OUT}/synth/tiny-real-vocab.gguf
    --recipe q8 --tokenizer ${TOKENIZER} --seed 7)
# tiny-a's configuration with the real vocabulary and a 4096-token context: a second model
# with an MTP block for the server's speculative-decoding check.
file(READ ${DATA}/oracle/tiny-a/config.json tiny_a_config)
string(JSON tiny_a_config SET "${tiny_a_config}" vocab_size 129280)
string(JSON tiny_a_config SET "${tiny_a_config}" max_seq_len 4096)
file(WRITE ${OUT}/synth/tiny-a-real-vocab.json "${tiny_a_config}")
run(${QUANTIZE} --synthetic ${OUT}/synth/tiny-a-real-vocab.json --out ${OUT}/synth/tiny-a-real-vocab.gguf
    --recipe q8 --f16-fallback --tokenizer ${TOKENIZER} --seed 11)
