# The chat CLI behind the ds4 binary (helper "cli"): a library so the ds4 main can dispatch to
# it and the tests can link its pieces. Included from apps/ds4.cmake; tests/cli includes it
# too when that has not happened, so the CLI always builds.
if(NOT TARGET ds4_cli)
  find_path(DS4_LIBEDIT_INCLUDE_DIR histedit.h REQUIRED)
  find_library(DS4_LIBEDIT_LIBRARY edit REQUIRED)
  add_library(ds4_cli STATIC
    ${CMAKE_SOURCE_DIR}/apps/ds4_cli.cpp
    ${CMAKE_SOURCE_DIR}/apps/ds4_cli_chat.cpp
    ${CMAKE_SOURCE_DIR}/apps/ds4_cli_options.cpp
    ${CMAKE_SOURCE_DIR}/apps/ds4_cli_repl.cpp
  )
  target_include_directories(ds4_cli PUBLIC ${CMAKE_SOURCE_DIR}/apps ${DS4_LIBEDIT_INCLUDE_DIR})
  target_link_libraries(ds4_cli PUBLIC ds4_args_engine ds4_engine ds4_text ds4_gguf ds4_sample ds4_spec ds4_grammar ds4_kvcache
                        ${DS4_LIBEDIT_LIBRARY} Threads::Threads)
endif()
