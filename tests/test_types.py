from orchestra.types import Answer, Cost, Evidence, Route, Trace


def test_answer_round_trips_through_json():
    trace = Trace()
    with trace.step("read", chunks=2) as st:
        st.detail["prompt_tokens"] = 10
    a = Answer(question="q", text="t", strategy="rag",
               evidence=[Evidence(chunk_id="c1", doc_id="d", start=0, end=5, score=0.5)],
               route=Route(strategy="rag", reason="short", signals={"tokens": 3}),
               cost=Cost(prompt_tokens=10, generated_tokens=2, model_calls=1, kv_pages_read=3,
                         kv_pages_total=30, wall_seconds=0.25),
               trace=trace)
    b = Answer.model_validate_json(a.model_dump_json())
    assert b == a
    assert b.trace.steps[0].detail == {"chunks": 2, "prompt_tokens": 10}
    assert b.trace.steps[0].seconds >= 0


def test_costs_add_field_by_field():
    c = Cost(prompt_tokens=1, model_calls=1, wall_seconds=0.5) + Cost(prompt_tokens=2,
                                                                    generated_tokens=3)
    assert (c.prompt_tokens, c.generated_tokens, c.model_calls, c.wall_seconds) == (3, 3, 1, 0.5)
    assert Cost(kv_pages_read=1, kv_pages_total=4).pages_read_fraction == 0.25
    assert Cost().pages_read_fraction is None


def test_an_answers_strategy_type_and_its_routes_pipeline_name_are_two_fields():
    from orchestra.types import Answer, Route

    a = Answer(question="q", text="t", strategy_type="rag",
               route=Route(strategy="lexical", reason="chosen"))
    data = a.model_dump(mode="json")
    assert data["strategy_type"] == "rag" and data["route"]["strategy"] == "lexical"
    assert "strategy" not in data
    # Answers written before the rename (key "strategy") still read.
    old = {k: v for k, v in data.items() if k not in ("strategy_type", "short")}
    assert Answer.model_validate({**old, "strategy": "rag"}).strategy_type == "rag"
