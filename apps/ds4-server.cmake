# ds4-server: OpenAI-compatible HTTP server. Needs the engine implementation (ds4_engine).
if(TARGET ds4_engine AND TARGET ds4_server)
  add_executable(ds4-server ${CMAKE_CURRENT_SOURCE_DIR}/ds4_server_main.cpp)
  target_link_libraries(ds4-server PRIVATE ds4_server ds4_engine ds4_gguf)
endif()
