# ds4-quantize: converter, synthetic models, inspection (src/convert).
add_executable(ds4-quantize ${CMAKE_CURRENT_LIST_DIR}/ds4-quantize.cpp)
target_link_libraries(ds4-quantize PRIVATE ds4_convert ds4_args)
