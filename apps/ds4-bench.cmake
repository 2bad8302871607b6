# ds4-bench: prefill/generation speed sweep along a fixed text (bench/README.md).
# ds4_bench_opts (options, frontiers, CSV) is a library so tests/bench can unit-test it.
if(TARGET ds4_engine)
  add_library(ds4_bench_opts STATIC ${CMAKE_CURRENT_LIST_DIR}/ds4_bench_options.cpp)
  target_include_directories(ds4_bench_opts PUBLIC ${CMAKE_CURRENT_LIST_DIR})
  target_link_libraries(ds4_bench_opts PUBLIC ds4_engine ds4_args_engine)
  add_executable(ds4-bench ${CMAKE_CURRENT_LIST_DIR}/ds4_bench.cpp)
  target_link_libraries(ds4-bench PRIVATE ds4_bench_opts ds4_engine ds4_text ds4_gguf
                        nlohmann_json::nlohmann_json Threads::Threads)
endif()
